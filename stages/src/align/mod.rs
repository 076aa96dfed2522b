//! Permutation alignment (re-basin) of MLPs to a reference (docs/science.md section 3), and the
//! loss-barrier metric that shows its effect (3.4).
//!
//! Convention: the aligned network is `W'_l[r, a] = W_l[σ_l(r), σ_{l-1}(a)]` and
//! `b'_l[r] = b_l[σ_l(r)]`, with `σ_0 = id` (inputs) and `σ_L = id` (outputs): new hidden
//! neuron `r` takes old neuron `σ_l(r)`. Only hidden layers are permuted.

pub mod barrier;
pub mod sinkhorn;
pub mod weight_matching;

use crate::layout::Layout;

/// One permutation per hidden layer, `sigma[l-1]` for layer `l` in 1..L.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutations {
    pub sigma: Vec<Vec<usize>>,
}

impl Permutations {
    pub fn identity(layout: &Layout) -> Self {
        let hidden = &layout.sizes()[1..layout.num_layers()];
        Permutations { sigma: hidden.iter().map(|&n| (0..n).collect()).collect() }
    }

    pub fn is_identity(&self) -> bool {
        self.sigma.iter().all(|s| s.iter().enumerate().all(|(i, &j)| i == j))
    }

    /// σ_l for any layer index 0..=L (identity outside the hidden layers).
    fn of_layer(&self, layout: &Layout, l: usize) -> Option<&[usize]> {
        if l == 0 || l >= layout.num_layers() {
            None
        } else {
            Some(&self.sigma[l - 1])
        }
    }

    /// The permuted network, computing the same function as θ.
    pub fn apply(&self, layout: &Layout, theta: &[f32]) -> Vec<f32> {
        assert_eq!(theta.len(), layout.num_params(), "θ does not match layout {layout}");
        assert_eq!(self.sigma.len(), layout.num_layers() - 1, "one permutation per hidden layer");
        let sizes = layout.sizes();
        let mut out = vec![0.0; theta.len()];
        for l in 1..=layout.num_layers() {
            let (n_in, n_out) = (sizes[l - 1], sizes[l]);
            let off = layout.weight_offset(l);
            let s_out = self.of_layer(layout, l);
            let s_in = self.of_layer(layout, l - 1);
            for a in 0..n_in {
                let src_a = s_in.map_or(a, |s| s[a]);
                for r in 0..n_out {
                    let src_r = s_out.map_or(r, |s| s[r]);
                    out[off + a * n_out + r] = theta[off + src_a * n_out + src_r];
                }
            }
            let (src, dst) = (layout.bias(theta, l), layout.bias_offset(l));
            for r in 0..n_out {
                out[dst + r] = src[s_out.map_or(r, |s| s[r])];
            }
        }
        out
    }
}

/// Squared L2 distance between two flat networks.
pub fn l2_distance_sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

/// How to align.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlignMethod {
    /// No permutation (the identity).
    None,
    /// Exact weight matching by linear assignment, coordinate descent over hidden layers
    /// (3.2) [recommended default].
    WeightMatching,
    /// Sinkhorn re-basin with the L2 objective (3.1) [faithful to the code's default].
    SinkhornL2,
    /// Sinkhorn re-basin with the midpoint data loss (3.3).
    SinkhornMid,
    /// Sinkhorn re-basin with the random-interpolation data loss (3.3).
    SinkhornRnd,
}

crate::words!(AlignMethod, "alignment method", {
    None = "none",
    WeightMatching = "weight-matching",
    SinkhornL2 = "sinkhorn-l2",
    SinkhornMid = "sinkhorn-mid",
    SinkhornRnd = "sinkhorn-rnd",
});

impl AlignMethod {
    /// The Sinkhorn objective, for the Sinkhorn methods.
    pub fn sinkhorn_objective(self) -> Option<sinkhorn::Objective> {
        match self {
            AlignMethod::SinkhornL2 => Some(sinkhorn::Objective::L2),
            AlignMethod::SinkhornMid => Some(sinkhorn::Objective::Mid),
            AlignMethod::SinkhornRnd => Some(sinkhorn::Objective::Rnd),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlp::forward;
    use crate::rng;
    use rand::seq::SliceRandom;

    #[test]
    fn a_permuted_network_computes_the_same_function() {
        let layout = Layout(vec![6, 5, 4, 3]);
        let mut r = rng::stream(2, "test", 0);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut r, &mut theta, 0.0, 0.5);
        let mut perms = Permutations::identity(&layout);
        for s in &mut perms.sigma {
            s.shuffle(&mut r);
        }
        assert!(!perms.is_identity());
        let permuted = perms.apply(&layout, &theta);
        assert_ne!(permuted, theta);
        let mut x = vec![0.0; 9 * 6];
        rng::fill_normal(&mut r, &mut x, 0.0, 1.0);
        let (a, b) = (forward(&layout, &theta, &x, 9), forward(&layout, &permuted, &x, 9));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-5);
        }
    }

    #[test]
    fn method_names_round_trip() {
        for w in AlignMethod::NAMES {
            assert_eq!(w.parse::<AlignMethod>().unwrap().name(), *w);
        }
        assert!("sinkhorn".parse::<AlignMethod>().is_err());
    }
}
