//! Bayesian model averaging (docs/science.md 8.3, Fig. 7.5): predict with the average of the
//! softmax probabilities of the first n networks (Eq. 2.1), for each n of a grid, and
//! report accuracy and cross-entropy of the averaged prediction. The code's `model_average`
//! averages raw logits instead; that is [`Averaging::Logits`].
//!
//! Probabilities are accumulated as log-sum-exp of log-probabilities in f64, so that a
//! class every model gives vanishing probability still has a finite loss.

use rayon::prelude::*;

use super::metrics::batch_averaged;
use super::predict::{argmax, check_networks, check_split, logits};
use super::EvalError;
use crate::data::Split;
use crate::layout::Layout;

/// What is averaged across models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Averaging {
    /// Mean of softmax probabilities (Eq. 2.1) [recommended].
    Probabilities,
    /// Softmax of the mean logits (the code's `model_average`) [faithful to the code].
    Logits,
}

crate::words!(Averaging, "averaging", { Probabilities = "probabilities", Logits = "logits" });

/// One point of the curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BmaPoint {
    pub models: usize,
    pub accuracy: f64,
    pub loss: f64,
}

/// Networks whose logits are computed at once (in parallel) before being folded in order.
const CHUNK: usize = 16;

/// Running sums over models for every row and class.
struct Accumulator {
    averaging: Averaging,
    classes: usize,
    /// Probabilities: log Σ_k p_k; logits: Σ_k z_k.
    sums: Vec<f64>,
    models: usize,
}

impl Accumulator {
    fn new(averaging: Averaging, rows: usize, classes: usize) -> Self {
        let start = match averaging {
            Averaging::Probabilities => f64::NEG_INFINITY,
            Averaging::Logits => 0.0,
        };
        Accumulator { averaging, classes, sums: vec![start; rows * classes], models: 0 }
    }

    fn add(&mut self, logits: &[f32]) {
        for (acc, row) in self.sums.chunks_exact_mut(self.classes).zip(logits.chunks_exact(self.classes)) {
            match self.averaging {
                Averaging::Probabilities => {
                    let log_norm = log_sum_exp(row.iter().map(|&v| v as f64));
                    for (a, &z) in acc.iter_mut().zip(row) {
                        *a = log_add_exp(*a, z as f64 - log_norm);
                    }
                }
                Averaging::Logits => acc.iter_mut().zip(row).for_each(|(a, &z)| *a += z as f64),
            }
        }
        self.models += 1;
    }

    /// Accuracy and batch-averaged loss of the current average.
    fn point(&self, labels: &[u32], eval_batch: usize) -> BmaPoint {
        let n = self.models as f64;
        let mut correct = 0;
        let mut losses = Vec::with_capacity(labels.len());
        for (acc, &label) in self.sums.chunks_exact(self.classes).zip(labels) {
            let label = label as usize;
            if argmax(acc) == label {
                correct += 1;
            }
            losses.push(match self.averaging {
                // −log((1/n) Σ_k p_k[y])
                Averaging::Probabilities => n.ln() - acc[label],
                // CE of softmax(Σ_k z_k / n)
                Averaging::Logits => log_sum_exp(acc.iter().map(|a| a / n)) - acc[label] / n,
            });
        }
        BmaPoint { models: self.models, accuracy: correct as f64 / labels.len() as f64, loss: batch_averaged(&losses, eval_batch) }
    }
}

fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// The grid sorted, deduplicated and cut to the networks available.
pub fn usable_grid(grid: &[usize], available: usize) -> Vec<usize> {
    let mut out: Vec<usize> = grid.iter().copied().filter(|&n| n >= 1 && n <= available).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The averaging curve over `networks` taken in order: one point per `n` in `grid`
/// (entries beyond the number of networks are dropped; see [`usable_grid`]).
pub fn bma_curve(
    layout: &Layout,
    networks: &[&[f32]],
    split: &Split,
    eval_batch: usize,
    grid: &[usize],
    averaging: Averaging,
) -> Result<Vec<BmaPoint>, EvalError> {
    check_networks(layout, networks)?;
    check_split(layout, split)?;
    let grid = usable_grid(grid, networks.len());
    let Some(&largest) = grid.last() else { return Ok(Vec::new()) };
    let mut acc = Accumulator::new(averaging, split.len(), layout.outputs());
    let mut points = Vec::with_capacity(grid.len());
    for chunk in networks[..largest].chunks(CHUNK) {
        let outputs: Vec<Vec<f32>> = chunk.par_iter().map(|theta| logits(layout, theta, &split.x, split.len())).collect();
        for out in &outputs {
            acc.add(out);
            if grid.binary_search(&acc.models).is_ok() {
                points.push(acc.point(&split.y, eval_batch));
            }
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::network_metrics;
    use crate::rng;

    fn setup() -> (Layout, Split, Vec<Vec<f32>>) {
        let layout = Layout(vec![4, 6, 3]);
        let mut r = rng::stream(9, "test", 0);
        let rows = 200;
        let mut x = vec![0.0; rows * 4];
        rng::fill_normal(&mut r, &mut x, 0.0, 1.0);
        // Labels from a fixed linear rule, so random networks are right a third of the time
        // and their average does better.
        let y = x.chunks(4).map(|v| if v[0] > 0.5 { 0 } else if v[1] > 0.0 { 1 } else { 2 }).collect();
        let nets = (0..20)
            .map(|_| {
                let mut t = vec![0.0; layout.num_params()];
                rng::fill_normal(&mut r, &mut t, 0.0, 1.0);
                t
            })
            .collect();
        (layout, Split { features: 4, x, y }, nets)
    }

    #[test]
    fn copies_of_one_network_average_to_that_network() {
        let (layout, split, nets) = setup();
        let single = network_metrics(&layout, &nets[0], &split, 64);
        let copies: Vec<&[f32]> = vec![nets[0].as_slice(); 8];
        for averaging in [Averaging::Probabilities, Averaging::Logits] {
            let curve = bma_curve(&layout, &copies, &split, 64, &[1, 2, 4, 8], averaging).unwrap();
            assert_eq!(curve.iter().map(|p| p.models).collect::<Vec<_>>(), [1, 2, 4, 8]);
            for p in &curve {
                assert_eq!(p.accuracy, single.accuracy, "{averaging:?} {p:?}");
                assert!((p.loss - single.loss).abs() < 1e-5, "{averaging:?} {p:?} vs {single:?}");
            }
        }
    }

    #[test]
    fn averaging_distinct_networks_differs_by_rule_and_grid_is_cut() {
        let (layout, split, nets) = setup();
        let refs: Vec<&[f32]> = nets.iter().map(Vec::as_slice).collect();
        let probs = bma_curve(&layout, &refs, &split, 64, &[64, 1, 16, 16], Averaging::Probabilities).unwrap();
        let logits = bma_curve(&layout, &refs, &split, 64, &[1, 16], Averaging::Logits).unwrap();
        assert_eq!(probs.iter().map(|p| p.models).collect::<Vec<_>>(), [1, 16]);
        // One model: both rules are the network itself.
        assert_eq!(probs[0].accuracy, logits[0].accuracy);
        assert!((probs[0].loss - logits[0].loss).abs() < 1e-12);
        assert_ne!(probs[1].loss, logits[1].loss);
        // The loss of the average prediction is at most the average of the losses (Jensen).
        let mean_loss = refs[..16].iter().map(|t| network_metrics(&layout, t, &split, 64).loss).sum::<f64>() / 16.0;
        assert!(probs[1].loss <= mean_loss + 1e-9, "{} > {mean_loss}", probs[1].loss);
    }
}
