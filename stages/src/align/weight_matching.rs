//! Exact weight matching (docs/science.md 3.2, Ainsworth et al.): maximize `⟨θ_ref, π(θ)⟩`,
//! i.e. minimize `‖θ_ref − π(θ)‖²` (permutations preserve `‖θ‖`), by coordinate descent over
//! hidden layers, each step an exact linear assignment. With one hidden layer a single LAP
//! is the global optimum; with more, every step can only decrease the distance.

use rand::seq::SliceRandom;

use super::Permutations;
use crate::assignment;
use crate::layout::Layout;
use crate::rng::Rng;

/// Most sweeps over the hidden layers before giving up on convergence.
pub const MAX_SWEEPS: usize = 100;

/// The outcome of aligning one network.
#[derive(Clone, Debug, PartialEq)]
pub struct Matching {
    pub perms: Permutations,
    /// Sweeps run (the last one changed nothing unless `MAX_SWEEPS` was hit).
    pub sweeps: usize,
}

/// Similarity `C[r, c]` between reference neuron `r` and model neuron `c` of hidden layer
/// `l`, with the permutations of layers `l-1` and `l+1` held fixed.
fn similarity(layout: &Layout, reference: &[f32], theta: &[f32], perms: &Permutations, l: usize) -> Vec<f64> {
    let sizes = layout.sizes();
    let (n_in, n, n_next) = (sizes[l - 1], sizes[l], sizes[l + 1]);
    let off = layout.weight_offset(l);
    let next_off = layout.weight_offset(l + 1);
    let s_in = perms.of_layer(layout, l - 1);
    let s_next = perms.of_layer(layout, l + 1);
    let mut c = vec![0.0f64; n * n];
    // Incoming: Σ_a W_ref[r, a] · W[c, σ_{l-1}(a)]; in the flat layout W[c, a] = θ[off + a·n + c].
    for a in 0..n_in {
        let src_a = s_in.map_or(a, |s| s[a]);
        let ref_row = &reference[off + a * n..off + (a + 1) * n];
        let row = &theta[off + src_a * n..off + (src_a + 1) * n];
        for (r, &wr) in ref_row.iter().enumerate() {
            let wr = wr as f64;
            for (cc, &w) in row.iter().enumerate() {
                c[r * n + cc] += wr * w as f64;
            }
        }
    }
    // Biases: b_ref[r] · b[c].
    let (b_ref, b) = (layout.bias(reference, l), layout.bias(theta, l));
    for r in 0..n {
        for cc in 0..n {
            c[r * n + cc] += b_ref[r] as f64 * b[cc] as f64;
        }
    }
    // Outgoing: Σ_o W_{l+1,ref}[o, r] · W_{l+1}[σ_{l+1}(o), c]; W_{l+1}[o, r] = θ[next_off + r·n_next + o].
    for r in 0..n {
        let ref_out = &reference[next_off + r * n_next..next_off + (r + 1) * n_next];
        for cc in 0..n {
            let out = &theta[next_off + cc * n_next..next_off + (cc + 1) * n_next];
            let dot: f64 = (0..n_next).map(|o| ref_out[o] as f64 * out[s_next.map_or(o, |s| s[o])] as f64).sum();
            c[r * n + cc] += dot;
        }
    }
    c
}

/// Align θ to `reference`. `rng` orders the hidden layers within each sweep.
pub fn weight_matching(layout: &Layout, reference: &[f32], theta: &[f32], rng: &mut Rng) -> Matching {
    assert_eq!(reference.len(), layout.num_params(), "reference does not match layout {layout}");
    assert_eq!(theta.len(), layout.num_params(), "θ does not match layout {layout}");
    let mut perms = Permutations::identity(layout);
    let mut hidden: Vec<usize> = (1..layout.num_layers()).collect();
    let mut sweeps = 0;
    while sweeps < MAX_SWEEPS {
        sweeps += 1;
        hidden.shuffle(rng);
        let mut changed = false;
        for &l in &hidden {
            let n = layout.sizes()[l];
            let c = similarity(layout, reference, theta, &perms, l);
            let current = assignment::total(&c, n, &perms.sigma[l - 1]);
            let best = assignment::solve_max(&c, n);
            // Only move on a strict improvement, so ties cannot make the loop cycle.
            if assignment::total(&c, n, &best) > current + 1e-9 * current.abs().max(1.0) {
                perms.sigma[l - 1] = best;
                changed = true;
            }
        }
        if !changed || hidden.len() == 1 {
            break;
        }
    }
    Matching { perms, sweeps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::l2_distance_sq;
    use crate::rng;

    fn random_network(layout: &Layout, r: &mut Rng) -> Vec<f32> {
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(r, &mut theta, 0.0, 0.5);
        theta
    }

    #[test]
    fn one_hidden_layer_equals_brute_force() {
        let layout = Layout(vec![7, 6, 3]);
        let mut r = rng::stream(21, "test", 0);
        for _ in 0..5 {
            let reference = random_network(&layout, &mut r);
            let theta = random_network(&layout, &mut r);
            let m = weight_matching(&layout, &reference, &theta, &mut r);
            let got = l2_distance_sq(&reference, &m.perms.apply(&layout, &theta));
            let best = crate::assignment::permutations(6)
                .into_iter()
                .map(|s| l2_distance_sq(&reference, &Permutations { sigma: vec![s] }.apply(&layout, &theta)))
                .fold(f64::INFINITY, f64::min);
            assert!((got - best).abs() < 1e-6 * best.max(1.0), "matching {got} vs brute force {best}");
        }
    }

    #[test]
    fn never_increases_the_distance_and_recovers_a_hidden_permutation() {
        let layout = Layout(vec![30, 16, 16, 2]);
        let mut r = rng::stream(22, "test", 0);
        for _ in 0..10 {
            let reference = random_network(&layout, &mut r);
            let theta = random_network(&layout, &mut r);
            let m = weight_matching(&layout, &reference, &theta, &mut r);
            let before = l2_distance_sq(&reference, &theta);
            let after = l2_distance_sq(&reference, &m.perms.apply(&layout, &theta));
            assert!(after <= before + 1e-9, "alignment increased the distance: {before} -> {after}");
        }
        // A permuted copy of the reference is matched back exactly.
        let reference = random_network(&layout, &mut r);
        let mut scramble = Permutations::identity(&layout);
        for s in &mut scramble.sigma {
            s.shuffle(&mut r);
        }
        let copy = scramble.apply(&layout, &reference);
        let m = weight_matching(&layout, &reference, &copy, &mut r);
        assert!(l2_distance_sq(&reference, &m.perms.apply(&layout, &copy)) < 1e-10);
    }

    #[test]
    fn aligning_the_reference_to_itself_is_the_identity() {
        let layout = Layout(vec![30, 16, 16, 2]);
        let mut r = rng::stream(23, "test", 0);
        let reference = random_network(&layout, &mut r);
        let m = weight_matching(&layout, &reference, &reference, &mut r);
        assert!(m.perms.is_identity());
    }
}
