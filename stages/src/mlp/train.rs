//! The base-model training loop with the recording rule of docs/science.md 2.1.
//!
//! For each epoch `e` and minibatch `i` (restarting at 0 every epoch): forward, loss and
//! backward; if `e ≥ skip_epochs` and `i mod every == 0`, record θ (the state *before*
//! update `i`); then take the optimizer step. Each epoch draws a fresh permutation of the
//! training rows; the last batch may be smaller (no `drop_last`).

use rand::seq::SliceRandom;

use super::grad::{loss_and_grad, Workspace};
use super::optim::OptimizerConfig;
use crate::data::Split;
use crate::layout::Layout;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
}

/// Which states to record during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRule {
    pub skip_epochs: usize,
    pub every: usize,
}

impl RecordRule {
    pub fn records(&self, epoch: usize, step: usize) -> bool {
        epoch >= self.skip_epochs && step % self.every == 0
    }

    /// Records per run: `(E − skip) · ceil(batches / every)`.
    pub fn records_per_run(&self, epochs: usize, batches_per_epoch: usize) -> usize {
        epochs.saturating_sub(self.skip_epochs) * batches_per_epoch.div_ceil(self.every)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    #[error("training diverged: loss {loss} at epoch {epoch}, step {step}")]
    Diverged { epoch: usize, step: usize, loss: f64 },
    #[error("the training split is empty")]
    EmptyTrainSet,
}

/// Number of minibatches per epoch.
pub fn batches_per_epoch(rows: usize, batch_size: usize) -> usize {
    rows.div_ceil(batch_size)
}

/// Train θ in place. `on_record(epoch, step, θ)` receives every recorded state.
pub fn train(
    layout: &Layout,
    theta: &mut [f32],
    data: &Split,
    config: &TrainConfig,
    rule: Option<RecordRule>,
    rng: &mut Rng,
    mut on_record: impl FnMut(usize, usize, &[f32]),
) -> Result<(), TrainError> {
    if data.is_empty() {
        return Err(TrainError::EmptyTrainSet);
    }
    let features = data.features;
    let mut optimizer = config.optimizer.build(theta.len());
    let mut ws = Workspace::default();
    let mut grad = vec![0.0; theta.len()];
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut x = Vec::with_capacity(config.batch_size * features);
    let mut y = Vec::with_capacity(config.batch_size);
    for epoch in 0..config.epochs {
        order.shuffle(rng);
        for (step, rows) in order.chunks(config.batch_size).enumerate() {
            x.clear();
            y.clear();
            for &r in rows {
                x.extend_from_slice(data.row(r));
                y.push(data.y[r]);
            }
            let stats = loss_and_grad(layout, theta, &x, &y, &mut ws, &mut grad);
            if !stats.loss.is_finite() {
                return Err(TrainError::Diverged { epoch, step, loss: stats.loss });
            }
            if rule.is_some_and(|r| r.records(epoch, step)) {
                on_record(epoch, step, theta);
            }
            optimizer.step(theta, &grad);
        }
    }
    Ok(())
}
