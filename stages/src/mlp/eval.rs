//! Metrics of a trained MLP (docs/science.md 1.3): the loss is the mean over batches of the
//! batch-mean cross-entropy (so a smaller last batch weighs as much as a full one), the
//! accuracy is correct / total. Batches are taken in order.

use super::grad::{batch_loss, Workspace};
use crate::data::Split;
use crate::layout::Layout;

/// Batch size of the evaluation loaders (`get_taskloaders` / `get_uci_loaders` default).
pub const EVAL_BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    pub loss: f64,
    pub accuracy: f64,
}

/// Evaluate θ on a split with batches of `batch_size`.
pub fn evaluate(layout: &Layout, theta: &[f32], split: &Split, batch_size: usize, ws: &mut Workspace) -> Metrics {
    assert!(!split.is_empty(), "cannot evaluate on an empty split");
    assert!(batch_size > 0, "evaluation batch size must be positive");
    let mut loss_sum = 0.0;
    let mut batches = 0usize;
    let mut correct = 0usize;
    let features = split.features;
    for start in (0..split.len()).step_by(batch_size) {
        let end = (start + batch_size).min(split.len());
        let stats = batch_loss(layout, theta, &split.x[start * features..end * features], &split.y[start..end], ws);
        loss_sum += stats.loss;
        correct += stats.correct;
        batches += 1;
    }
    Metrics { loss: loss_sum / batches as f64, accuracy: correct as f64 / split.len() as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_averages_batch_means_not_rows() {
        // Logits are all zero (θ = 0), so every row's CE is ln 2 and the batch means agree;
        // accuracy follows argmax = class 0 on ties.
        let layout = Layout(vec![2, 2]);
        let theta = vec![0.0; layout.num_params()];
        let split = Split { features: 2, x: vec![0.0; 10], y: vec![0, 1, 0, 0, 1] };
        let m = evaluate(&layout, &theta, &split, 2, &mut Workspace::default());
        assert!((m.loss - std::f64::consts::LN_2).abs() < 1e-6);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
    }
}
