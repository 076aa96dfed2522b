//! Learning curves from a given initialization (docs/science.md 8.4c, Fig. 7.6;
//! `utils/results.py::get_sgd_traj_losses`): train θ for a number of optimizer steps and,
//! every `record_every` steps, measure loss and accuracy on a fixed evaluation split.
//!
//! The loop is the base trainer's (fresh shuffle per epoch, last batch smaller, PyTorch
//! optimizers) but counts iterations across epochs, which is what the curve's x-axis is.

use rand::seq::SliceRandom;

use crate::data::Split;
use crate::layout::Layout;
use crate::mlp::grad::{loss_and_grad, Workspace};
use crate::mlp::{evaluate, OptimizerConfig, TrainError};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinetuneConfig {
    /// Optimizer steps in total.
    pub iterations: usize,
    /// Measure before step 0 and after every this many steps (and after the last).
    pub record_every: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    /// Batch size of the loss averaging on the evaluation split (docs/science.md 1.3).
    pub eval_batch: usize,
}

/// One measurement: after `iteration` optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    pub iteration: usize,
    pub accuracy: f64,
    pub loss: f64,
}

/// Train θ in place on `train`, measuring on `eval`; returns the curve.
pub fn finetune(
    layout: &Layout,
    theta: &mut [f32],
    train: &Split,
    eval: &Split,
    config: &FinetuneConfig,
    rng: &mut Rng,
) -> Result<Vec<CurvePoint>, TrainError> {
    if train.is_empty() {
        return Err(TrainError::EmptyTrainSet);
    }
    let every = config.record_every.max(1);
    let mut ws = Workspace::default();
    let mut measure = |theta: &[f32], iteration: usize| {
        let m = evaluate(layout, theta, eval, config.eval_batch, &mut ws);
        CurvePoint { iteration, accuracy: m.accuracy, loss: m.loss }
    };
    let mut curve = vec![measure(theta, 0)];
    let mut optimizer = config.optimizer.build(theta.len());
    let mut train_ws = Workspace::default();
    let mut grad = vec![0.0; theta.len()];
    let mut order: Vec<usize> = (0..train.len()).collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut iteration = 0;
    let mut epoch = 0;
    while iteration < config.iterations {
        order.shuffle(rng);
        for (step, rows) in order.chunks(config.batch_size.max(1)).enumerate() {
            if iteration == config.iterations {
                break;
            }
            x.clear();
            y.clear();
            for &r in rows {
                x.extend_from_slice(train.row(r));
                y.push(train.y[r]);
            }
            let stats = loss_and_grad(layout, theta, &x, &y, &mut train_ws, &mut grad);
            if !stats.loss.is_finite() {
                return Err(TrainError::Diverged { epoch, step, loss: stats.loss });
            }
            optimizer.step(theta, &grad);
            iteration += 1;
            if iteration % every == 0 || iteration == config.iterations {
                curve.push(measure(theta, iteration));
            }
        }
        epoch += 1;
    }
    Ok(curve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{self, DatasetName};
    use crate::mlp::MlpConfig;
    use crate::rng;

    #[test]
    fn records_on_the_grid_and_learns() {
        let uci = data::load(DatasetName::UciWdbc, std::path::Path::new("unused"), 42).unwrap();
        let layout = Layout(vec![30, 16, 16, 2]);
        let mut theta = MlpConfig::new(layout.clone()).init(&mut rng::stream(1, "test init", 0));
        let config = FinetuneConfig { iterations: 23, record_every: 5, batch_size: 64, optimizer: OptimizerConfig::adam(1e-2), eval_batch: 64 };
        let curve = finetune(&layout, &mut theta, &uci.train, &uci.test, &config, &mut rng::stream(1, "test shuffle", 0)).unwrap();
        assert_eq!(curve.iter().map(|p| p.iteration).collect::<Vec<_>>(), [0, 5, 10, 15, 20, 23]);
        assert!(curve[5].loss < curve[0].loss, "{curve:?}");
        assert!(curve[5].accuracy > 0.85, "{curve:?}");
    }
}
