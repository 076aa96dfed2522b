//! Per-network test accuracy and cross-entropy (docs/science.md 8.1) with the exact averaging of
//! 1.3: the loss is the mean over batches of `eval_batch` rows (in split order) of each
//! batch's mean cross-entropy, so a smaller last batch weighs as much as a full one.
//!
//! The forward runs over many rows at once; only the averaging follows the loader's
//! batches. The per-row arithmetic is the trainer's (f32 log-sum-exp, f64 sums), so results
//! agree with [`crate::mlp::evaluate`].

use rayon::prelude::*;

use super::predict::{argmax, check_networks, check_split, logits};
use super::EvalError;
use crate::data::Split;
use crate::layout::Layout;
use crate::mlp::Metrics;

/// Cross-entropy of every row of `logits` `[rows × classes]`, and whether its argmax is the
/// label.
pub fn row_losses(logits: &[f32], labels: &[u32], classes: usize) -> (Vec<f64>, usize) {
    let mut losses = Vec::with_capacity(labels.len());
    let mut correct = 0;
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let label = label as usize;
        if argmax(row) == label {
            correct += 1;
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let log_sum = row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
        losses.push((log_sum - (row[label] - max)) as f64);
    }
    (losses, correct)
}

/// Mean over consecutive batches of `batch` rows of each batch's mean (docs/science.md 1.3).
pub fn batch_averaged(row_values: &[f64], batch: usize) -> f64 {
    let batch = batch.max(1);
    let (sum, batches) = row_values
        .chunks(batch)
        .fold((0.0, 0usize), |(sum, n), chunk| (sum + chunk.iter().sum::<f64>() / chunk.len() as f64, n + 1));
    sum / batches.max(1) as f64
}

/// Accuracy and loss of one network on a split.
pub fn network_metrics(layout: &Layout, theta: &[f32], split: &Split, eval_batch: usize) -> Metrics {
    let out = logits(layout, theta, &split.x, split.len());
    let (losses, correct) = row_losses(&out, &split.y, layout.outputs());
    Metrics { loss: batch_averaged(&losses, eval_batch), accuracy: correct as f64 / split.len() as f64 }
}

/// Accuracy and loss of every network, in order; networks run in parallel on the current
/// rayon pool.
pub fn evaluate_networks(layout: &Layout, networks: &[&[f32]], split: &Split, eval_batch: usize) -> Result<Vec<Metrics>, EvalError> {
    check_networks(layout, networks)?;
    check_split(layout, split)?;
    if eval_batch == 0 {
        return Err(EvalError::ZeroSize { what: "the evaluation batch" });
    }
    Ok(networks.par_iter().map(|theta| network_metrics(layout, theta, split, eval_batch)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlp::{self, grad::Workspace};
    use crate::rng;

    #[test]
    fn batch_averaging_weighs_the_last_batch_fully() {
        // Batches [1, 1] and [4]: mean of batch means = 2.5, not the row mean 2.
        assert_eq!(batch_averaged(&[1.0, 1.0, 4.0], 2), 2.5);
    }

    #[test]
    fn agrees_with_the_trainer_evaluation() {
        let layout = Layout(vec![6, 5, 3]);
        let mut r = rng::stream(4, "test", 0);
        let rows = 150;
        let mut x = vec![0.0; rows * 6];
        rng::fill_normal(&mut r, &mut x, 0.0, 1.0);
        let y = (0..rows).map(|i| (i % 3) as u32).collect();
        let split = Split { features: 6, x, y };
        let nets: Vec<Vec<f32>> = (0..3)
            .map(|_| {
                let mut t = vec![0.0; layout.num_params()];
                rng::fill_normal(&mut r, &mut t, 0.0, 0.7);
                t
            })
            .collect();
        let refs: Vec<&[f32]> = nets.iter().map(Vec::as_slice).collect();
        let ours = evaluate_networks(&layout, &refs, &split, 64).unwrap();
        for (theta, m) in nets.iter().zip(&ours) {
            let reference = mlp::evaluate(&layout, theta, &split, 64, &mut Workspace::default());
            assert!((m.loss - reference.loss).abs() < 1e-6, "{m:?} vs {reference:?}");
            assert_eq!(m.accuracy, reference.accuracy);
        }
    }
}
