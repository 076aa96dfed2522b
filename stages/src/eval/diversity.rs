//! Functional diversity (docs/science.md 8.2, Table 7.2), reconstructed: no code exists.
//!
//! Each network θ_i maps K fixed inputs to the set `A_i` of its softmax outputs in `R^C`. A
//! Gaussian KDE `p_A(z) = (1/K) Σ_{a∈A} N(z; a, h²I)` smooths each set, and
//!
//! - Monte-Carlo form [recommended]:
//!   `JSD(A,B) = ½·mean_{z∈A} log(2p_A/(p_A+p_B)) + ½·mean_{z∈B} log(2p_B/(p_A+p_B))`;
//! - density-weighted form (the thesis's Eq. 7.2 read literally): each sum weighted by
//!   `p_A(z)` (resp. `p_B(z)`) normalized over its set instead of 1/K;
//!
//! `Diversity(S) = (1/N²) Σ_{i,j} JSD(A_i, A_j)` including the zero diagonal, ± the std of
//! those N² values; the statistics of the i < j pairs are reported too. JSD is in nats.
//!
//! The Gaussian's normalizing constant cancels in every ratio and in the normalized
//! weights, so densities are kept in log form up to that constant. Squared distances come
//! from one sgemm per pair (`|z|² + |a|² − 2 z·a`); the kernel matrix of a pair gives both
//! directions at once (row sums: density of B at points of A; column sums: of A at B).

use rayon::prelude::*;

use super::predict::{check_networks, check_split, logits, softmax};
use crate::stats::MeanStd;
use super::EvalError;
use crate::data::Split;
use crate::layout::Layout;
use crate::mlp::model::gemm;

/// How the two halves of the JSD average over their points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsdForm {
    /// Plain mean over the set's points (Monte-Carlo estimate) [recommended].
    MonteCarlo,
    /// Weighted by the set's own normalized density (thesis Eq. 7.2 literally).
    DensityWeighted,
}

crate::words!(JsdForm, "diversity form", { MonteCarlo = "monte-carlo", DensityWeighted = "density-weighted" });

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiversityConfig {
    /// KDE bandwidth h.
    pub bandwidth: f64,
    pub form: JsdForm,
}

/// The diversity of a set of networks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diversity {
    /// Over all N² ordered pairs, the zero diagonal included (the thesis's definition).
    pub all: MeanStd,
    /// Over the i < j pairs; `None` for a single network.
    pub pairs: Option<MeanStd>,
    pub networks: usize,
    pub inputs: usize,
}

/// The softmax outputs of one network on the K inputs, `[K × C]`, with squared norms.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSet {
    pub points: Vec<f32>,
    norms: Vec<f32>,
}

impl OutputSet {
    pub fn new(points: Vec<f32>, classes: usize) -> Self {
        let norms = points.chunks_exact(classes).map(|z| z.iter().map(|v| v * v).sum()).collect();
        OutputSet { points, norms }
    }

    fn len(&self) -> usize {
        self.norms.len()
    }
}

/// The output sets of `networks` on the first `inputs` rows of `split`, in parallel.
pub fn output_sets(layout: &Layout, networks: &[&[f32]], split: &Split, inputs: usize) -> Result<Vec<OutputSet>, EvalError> {
    check_networks(layout, networks)?;
    check_split(layout, split)?;
    if inputs == 0 {
        return Err(EvalError::ZeroSize { what: "the number of diversity inputs" });
    }
    let rows = inputs.min(split.len());
    let classes = layout.outputs();
    Ok(networks.par_iter().map(|theta| OutputSet::new(softmax(&logits(layout, theta, &split.x, rows), classes), classes)).collect())
}

/// For every point of `a`, log Σ_{b∈B} exp(−|z−b|²/2h²), and for every point of `b` the
/// same over A. One shift (the smallest squared distance) serves both directions: softmax
/// outputs lie in the simplex, whose squared diameter is 2, so nothing underflows unless h
/// is below about 0.04, and then only terms that are negligible next to the own-set density.
fn log_kernel_sums(a: &OutputSet, b: &OutputSet, classes: usize, inv_two_h2: f32, dist: &mut Vec<f32>) -> (Vec<f64>, Vec<f64>) {
    let (ka, kb) = (a.len(), b.len());
    dist.resize(ka * kb, 0.0);
    // dist = A·Bᵀ; Bᵀ is B `[kb × C]` read with swapped strides.
    gemm(ka, classes, kb, &a.points, (classes, 1), &b.points, (1, classes), 0.0, dist);
    let mut shift = f32::INFINITY;
    for (row, &na) in dist.chunks_exact_mut(kb).zip(&a.norms) {
        for (d, &nb) in row.iter_mut().zip(&b.norms) {
            *d = (na + nb - 2.0 * *d).max(0.0);
            shift = shift.min(*d);
        }
    }
    let mut rows = vec![0.0f64; ka];
    let mut cols = vec![0.0f64; kb];
    for (row, row_sum) in dist.chunks_exact(kb).zip(rows.iter_mut()) {
        let mut sum = 0.0f64;
        for (d, col_sum) in row.iter().zip(cols.iter_mut()) {
            let e = ((shift - d) * inv_two_h2).exp() as f64;
            sum += e;
            *col_sum += e;
        }
        *row_sum = sum;
    }
    let offset = (-shift * inv_two_h2) as f64;
    let to_log = |v: &mut f64| *v = v.ln() + offset;
    rows.iter_mut().for_each(to_log);
    cols.iter_mut().for_each(to_log);
    (rows, cols)
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// Per-set quantities reused by every pair.
struct SetDensity {
    /// log Σ kernel of the set at its own points (the density up to constants).
    own: Vec<f64>,
    /// Averaging weights of the set's points, summing to 1.
    weights: Vec<f64>,
}

impl SetDensity {
    fn new(set: &OutputSet, classes: usize, inv_two_h2: f32, form: JsdForm, dist: &mut Vec<f32>) -> Self {
        let (own, _) = log_kernel_sums(set, set, classes, inv_two_h2, dist);
        let weights = match form {
            JsdForm::MonteCarlo => vec![1.0 / own.len() as f64; own.len()],
            JsdForm::DensityWeighted => {
                let max = own.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = own.iter().map(|l| (l - max).exp()).collect();
                let total: f64 = w.iter().sum();
                w.into_iter().map(|v| v / total).collect()
            }
        };
        SetDensity { own, weights }
    }

    /// Σ_z w(z)·log(2p_own(z) / (p_own(z) + p_other(z))); both sets have K points, so the
    /// 1/K factors of the densities cancel.
    fn half(&self, other_at_own: &[f64]) -> f64 {
        self.own
            .iter()
            .zip(other_at_own)
            .zip(&self.weights)
            .map(|((&p, &q), &w)| w * (std::f64::consts::LN_2 + p - log_add_exp(p, q)))
            .sum()
    }
}

/// The JSD between every pair i < j of output sets, row-major over pairs, in parallel.
fn pairwise_jsd(sets: &[OutputSet], classes: usize, config: DiversityConfig) -> Vec<f64> {
    let inv_two_h2 = (1.0 / (2.0 * config.bandwidth * config.bandwidth)) as f32;
    let densities: Vec<SetDensity> =
        sets.par_iter().map_init(Vec::new, |dist, set| SetDensity::new(set, classes, inv_two_h2, config.form, dist)).collect();
    let pairs: Vec<(usize, usize)> = (0..sets.len()).flat_map(|i| (i + 1..sets.len()).map(move |j| (i, j))).collect();
    pairs
        .par_iter()
        .map_init(Vec::new, |dist, &(i, j)| {
            let (j_at_i, i_at_j) = log_kernel_sums(&sets[i], &sets[j], classes, inv_two_h2, dist);
            0.5 * densities[i].half(&j_at_i) + 0.5 * densities[j].half(&i_at_j)
        })
        .collect()
}

/// The diversity of a list of output sets (all of the same K and C).
pub fn diversity(sets: &[OutputSet], classes: usize, config: DiversityConfig) -> Result<Diversity, EvalError> {
    if sets.is_empty() {
        return Err(EvalError::NoNetworks);
    }
    if !(config.bandwidth > 0.0 && config.bandwidth.is_finite()) {
        return Err(EvalError::ZeroSize { what: "the KDE bandwidth" });
    }
    let n = sets.len();
    let pair_values = pairwise_jsd(sets, classes, config);
    // Every i < j value stands for (i, j) and (j, i); the diagonal adds n zeros.
    let all = pair_values.iter().flat_map(|&v| [v, v]).chain(std::iter::repeat_n(0.0, n));
    Ok(Diversity {
        all: MeanStd::of(all).expect("at least one network"),
        pairs: MeanStd::of(pair_values.iter().copied()),
        networks: n,
        inputs: sets[0].len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    fn base() -> (Layout, Split, Vec<f32>) {
        let layout = Layout(vec![5, 8, 4]);
        let mut r = rng::stream(21, "test", 0);
        let mut x = vec![0.0; 120 * 5];
        rng::fill_normal(&mut r, &mut x, 0.0, 1.0);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut r, &mut theta, 0.0, 0.8);
        (layout, Split { features: 5, x, y: vec![0; 120] }, theta)
    }

    /// `n` networks: the base plus N(0, spread²) noise on every weight.
    fn perturbed(theta: &[f32], n: usize, spread: f32) -> Vec<Vec<f32>> {
        let mut r = rng::stream(22, "test", 0);
        (0..n)
            .map(|_| {
                let mut noise = vec![0.0; theta.len()];
                rng::fill_normal(&mut r, &mut noise, 0.0, 1.0);
                theta.iter().zip(&noise).map(|(t, e)| t + spread * e).collect()
            })
            .collect()
    }

    fn measure(layout: &Layout, split: &Split, nets: &[Vec<f32>], config: DiversityConfig) -> Diversity {
        let refs: Vec<&[f32]> = nets.iter().map(Vec::as_slice).collect();
        let sets = output_sets(layout, &refs, split, 100).unwrap();
        diversity(&sets, layout.outputs(), config).unwrap()
    }

    #[test]
    fn identical_networks_have_zero_diversity() {
        let (layout, split, theta) = base();
        let nets = vec![theta; 6];
        for form in [JsdForm::MonteCarlo, JsdForm::DensityWeighted] {
            let d = measure(&layout, &split, &nets, DiversityConfig { bandwidth: 1.0, form });
            assert!(d.all.mean.abs() < 1e-12 && d.all.std < 1e-12, "{form:?}: {d:?}");
            assert_eq!((d.networks, d.inputs, d.pairs.unwrap().count), (6, 100, 15));
        }
    }

    #[test]
    fn diversity_grows_with_the_spread_of_the_networks() {
        let (layout, split, theta) = base();
        for form in [JsdForm::MonteCarlo, JsdForm::DensityWeighted] {
            for bandwidth in [1.0, 0.1] {
                let config = DiversityConfig { bandwidth, form };
                let values: Vec<f64> =
                    [0.01, 0.1, 1.0].iter().map(|&s| measure(&layout, &split, &perturbed(&theta, 6, s), config).all.mean).collect();
                assert!(values[0] > 0.0 && values[0] < values[1] && values[1] < values[2], "{config:?}: {values:?}");
                // JSD is bounded by ln 2.
                assert!(values[2] < std::f64::consts::LN_2, "{values:?}");
            }
        }
    }

    #[test]
    fn the_diagonal_counts_in_the_mean() {
        let (layout, split, theta) = base();
        let nets = perturbed(&theta, 2, 0.5);
        let d = measure(&layout, &split, &nets, DiversityConfig { bandwidth: 1.0, form: JsdForm::MonteCarlo });
        let pair = d.pairs.unwrap().mean;
        // Values {0, 0, v, v}: mean v/2, std v/2.
        assert!((d.all.mean - pair / 2.0).abs() < 1e-15 && (d.all.std - pair / 2.0).abs() < 1e-12, "{d:?}");
    }
}
