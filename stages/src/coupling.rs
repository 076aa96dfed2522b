//! Pairing source and target batches before the probability path (docs/science.md §5.3).
//!
//! The main type is [`Coupling`]. `Independent` keeps the i-th source with the i-th
//! target; `Ot` solves the exact minibatch optimal-transport plan on squared Euclidean
//! costs of the flat ambient vectors (Hungarian algorithm: for uniform marginals of equal
//! size the EMD plan is a permutation divided by B) and then draws B index pairs i.i.d.
//! with replacement from the plan, as torchcfm's `OTPlanSampler` does. `Rebasin` keeps the
//! independent pairs and permutes each target's hidden neurons to its source by weight
//! matching (§5.3): the flow's network treats the neurons of a hidden layer as
//! exchangeable, so only a target expressed in its source's neuron order is a regression
//! target it can fit near t = 0.

use serde::{Deserialize, Serialize};

use crate::align::weight_matching::weight_matching;
use crate::assignment;
use crate::layout::Layout;
use crate::noise::ResumableRng;
use crate::rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coupling {
    Independent,
    Ot,
    Rebasin,
}

crate::words!(Coupling, "coupling", { Independent = "independent", Ot = "ot", Rebasin = "rebasin" });

impl Coupling {
    /// Index pairs `(i, j)`: row i of `x0` is paired with row j of `x1`. Both batches are
    /// `[B, P]` row-major.
    pub fn pair(self, x0: &[f32], x1: &[f32], p: usize, rng: &mut ResumableRng) -> Vec<(usize, usize)> {
        let b = x0.len() / p;
        match self {
            Coupling::Independent | Coupling::Rebasin => (0..b).map(|i| (i, i)).collect(),
            Coupling::Ot => draw_pairs(&ot_plan(x0, x1, p), b, rng),
        }
    }

    /// The paired `[B, P]` batches `(x0', x1')` of networks of `layout`: `x0[i]` and
    /// `x1[j]` for each pair, and for `Rebasin` each `x1'` row permuted (a network
    /// computing the same function) to be nearest its `x0'` row.
    pub fn couple(self, x0: &[f32], x1: &[f32], layout: &Layout, rng: &mut ResumableRng) -> (Vec<f32>, Vec<f32>) {
        let p = layout.num_params();
        let (x0_paired, mut x1_paired) = gather_pairs(&self.pair(x0, x1, p, rng), x0, x1, p);
        if self == Coupling::Rebasin && layout.num_layers() > 1 {
            for (source, target) in x0_paired.chunks(p).zip(x1_paired.chunks_mut(p)) {
                // The sweep order over hidden layers is the only randomness of the matching.
                let mut order = rng::stream(rng.next_u64(), "rebasin-sweeps", 0);
                let matching = weight_matching(layout, source, target, &mut order);
                let permuted = matching.perms.apply(layout, target);
                target.copy_from_slice(&permuted);
            }
        }
        (x0_paired, x1_paired)
    }
}

/// The `[B, P]` batches `x0[i]`, `x1[j]` for the pairs `(i, j)`.
fn gather_pairs(pairs: &[(usize, usize)], x0: &[f32], x1: &[f32], p: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x0_paired = Vec::with_capacity(pairs.len() * p);
    let mut x1_paired = Vec::with_capacity(pairs.len() * p);
    for &(i, j) in pairs {
        x0_paired.extend_from_slice(&x0[i * p..(i + 1) * p]);
        x1_paired.extend_from_slice(&x1[j * p..(j + 1) * p]);
    }
    (x0_paired, x1_paired)
}

/// `C_ij = ‖x0_i − x1_j‖²`, row-major `B × B`.
pub fn squared_costs(x0: &[f32], x1: &[f32], p: usize) -> Vec<f64> {
    let b = x0.len() / p;
    let mut cost = vec![0.0f64; b * b];
    for i in 0..b {
        for j in 0..b {
            cost[i * b + j] = x0[i * p..(i + 1) * p]
                .iter()
                .zip(&x1[j * p..(j + 1) * p])
                .map(|(a, c)| ((a - c) as f64).powi(2))
                .sum();
        }
    }
    cost
}

/// The exact OT plan with uniform marginals: `π[i, σ(i)] = 1/B`.
pub fn ot_plan(x0: &[f32], x1: &[f32], p: usize) -> Vec<f64> {
    let b = x0.len() / p;
    let sigma = assignment::solve_min(&squared_costs(x0, x1, p), b);
    let mut plan = vec![0.0f64; b * b];
    for (i, j) in sigma.into_iter().enumerate() {
        plan[i * b + j] = 1.0 / b as f64;
    }
    plan
}

/// `count` cells drawn i.i.d. from the categorical `π / Σπ` over the B² cells, with the
/// uniform plan as fallback when `Σπ < 1e-8`.
pub fn draw_pairs(plan: &[f64], count: usize, rng: &mut ResumableRng) -> Vec<(usize, usize)> {
    let cells = plan.len();
    let b = (cells as f64).sqrt().round() as usize;
    let total: f64 = plan.iter().sum();
    let uniform = total < 1e-8;
    let mut cumulative = Vec::with_capacity(cells);
    let mut acc = 0.0;
    for &w in plan {
        acc += if uniform { 1.0 / cells as f64 } else { w / total };
        cumulative.push(acc);
    }
    (0..count)
        .map(|_| {
            let u = rng.uniform() * acc;
            let cell = cumulative.partition_point(|&c| c <= u).min(cells - 1);
            (cell / b, cell % b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::assignment::permutations;

    #[test]
    fn ot_plan_of_eight_is_the_brute_force_optimum_over_b() {
        let mut rng = ResumableRng::seed_from(8);
        let (b, p) = (8, 5);
        for _ in 0..3 {
            let x0 = rng.normal_vec(b * p, 0.0, 1.0);
            let x1 = rng.normal_vec(b * p, 1.0, 1.0);
            let cost = squared_costs(&x0, &x1, p);
            let plan = ot_plan(&x0, &x1, p);
            // a permutation matrix divided by B
            for i in 0..b {
                let row: Vec<f64> = plan[i * b..(i + 1) * b].to_vec();
                assert_eq!(row.iter().filter(|&&v| v == 1.0 / 8.0).count(), 1);
                assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), 7);
                let col: f64 = (0..b).map(|k| plan[k * b + i]).sum();
                assert!((col - 1.0 / 8.0).abs() < 1e-12);
            }
            let plan_cost: f64 = plan.iter().zip(&cost).map(|(w, c)| w * c).sum::<f64>() * b as f64;
            let best = permutations(b)
                .iter()
                .map(|s| s.iter().enumerate().map(|(i, &j)| cost[i * b + j]).sum::<f64>())
                .fold(f64::INFINITY, f64::min);
            assert!((plan_cost - best).abs() < 1e-9, "{plan_cost} vs {best}");
            // drawn pairs come only from matched cells
            for (i, j) in Coupling::Ot.pair(&x0, &x1, p, &mut rng) {
                assert!(plan[i * b + j] > 0.0);
            }
        }
    }

    #[test]
    fn ot_pairs_cost_less_than_independent_pairs() {
        let mut rng = ResumableRng::seed_from(9);
        let (b, p) = (16, 4);
        let x0 = rng.normal_vec(b * p, 0.0, 1.0);
        let x1 = rng.normal_vec(b * p, 0.0, 1.0);
        let cost = squared_costs(&x0, &x1, p);
        let plan = ot_plan(&x0, &x1, p);
        let ot: f64 = plan.iter().zip(&cost).map(|(w, c)| w * c).sum();
        let independent: f64 = (0..b).map(|i| cost[i * b + i]).sum::<f64>() / b as f64;
        assert!(ot <= independent);
    }

    fn rebasin_batches(layout: &Layout, b: usize, rng: &mut ResumableRng) -> (Vec<f32>, Vec<f32>) {
        let p = layout.num_params();
        (rng.normal_vec(b * p, 0.0, 1.0), rng.normal_vec(b * p, 0.5, 1.0))
    }

    #[test]
    fn rebasin_targets_compute_the_same_function_and_are_the_brute_force_nearest() {
        use crate::align::{l2_distance_sq, Permutations};
        use crate::mlp::grad::{batch_loss, Workspace};
        let layout = Layout(vec![5, 6, 3]);
        let (b, p) = (4, layout.num_params());
        let mut rng = ResumableRng::seed_from(11);
        let (x0, x1) = rebasin_batches(&layout, b, &mut rng);
        let (x0_paired, x1_paired) = Coupling::Rebasin.couple(&x0, &x1, &layout, &mut rng);
        assert_eq!(x0_paired, x0, "the pairs stay independent");
        let inputs = rng.normal_vec(16 * 5, 0.0, 1.0);
        let labels: Vec<u32> = (0..16).map(|i| i % 3).collect();
        let mut ws = Workspace::default();
        for i in 0..b {
            let (source, target, moved) = (&x0[i * p..(i + 1) * p], &x1[i * p..(i + 1) * p], &x1_paired[i * p..(i + 1) * p]);
            let before = batch_loss(&layout, target, &inputs, &labels, &mut ws).loss;
            let after = batch_loss(&layout, moved, &inputs, &labels, &mut ws).loss;
            assert!((before - after).abs() < 1e-5, "the permuted target is another function: {before} vs {after}");
            let best = permutations(6)
                .into_iter()
                .map(|s| l2_distance_sq(source, &Permutations { sigma: vec![s] }.apply(&layout, target)))
                .fold(f64::INFINITY, f64::min);
            let got = l2_distance_sq(source, moved);
            assert!((got - best).abs() < 1e-6 * best, "rebasin {got} vs brute force {best}");
            assert!(got <= l2_distance_sq(source, target) + 1e-9);
        }
    }

    #[test]
    fn rebasin_follows_a_permutation_of_the_source() {
        // Permuting the source's hidden neurons permutes the coupled target the same way:
        // the regression target is as equivariant as the network that fits it. (Exact with
        // one hidden layer, where the matching is the global optimum.)
        use crate::align::Permutations;
        let layout = Layout(vec![6, 5, 2]);
        let (b, p) = (3, layout.num_params());
        let mut rng = ResumableRng::seed_from(12);
        let (x0, x1) = rebasin_batches(&layout, b, &mut rng);
        let q = Permutations { sigma: vec![vec![3, 0, 4, 1, 2]] };
        let x0_moved: Vec<f32> = x0.chunks(p).flat_map(|row| q.apply(&layout, row)).collect();
        let (_, plain) = Coupling::Rebasin.couple(&x0, &x1, &layout, &mut ResumableRng::seed_from(13));
        let (_, moved) = Coupling::Rebasin.couple(&x0_moved, &x1, &layout, &mut ResumableRng::seed_from(13));
        let expected: Vec<f32> = plain.chunks(p).flat_map(|row| q.apply(&layout, row)).collect();
        assert_eq!(moved, expected);
        // and a permuted copy of the source is matched back onto it exactly
        let (_, back) = Coupling::Rebasin.couple(&x0, &x0_moved, &layout, &mut rng);
        assert_eq!(back, x0);
    }

    #[test]
    fn draws_follow_the_plan_and_fall_back_to_uniform() {
        let mut rng = ResumableRng::seed_from(10);
        let plan = vec![0.0, 0.5, 0.5, 0.0];
        let pairs = draw_pairs(&plan, 1000, &mut rng);
        assert!(pairs.iter().all(|&(i, j)| i != j));
        let first = pairs.iter().filter(|&&(i, _)| i == 0).count();
        assert!((400..600).contains(&first));
        let uniform = draw_pairs(&[0.0; 4], 1000, &mut rng);
        assert!(uniform.iter().any(|&(i, j)| i == j));
    }
}
