//! The base MLP of docs/science.md section 1: init, forward, hand-written backpropagation,
//! PyTorch-exact optimizers, the training loop with the recording rule, and metrics; plus
//! a burn implementation of the same network.

pub mod burn_mlp;
pub mod eval;
pub mod grad;
pub mod model;
pub mod optim;
pub mod train;

pub use eval::{evaluate, Metrics, EVAL_BATCH};
pub use model::{forward, forward_layers, MlpConfig};
pub use optim::{OptimizerConfig, OptimizerKind};
pub use train::{train, RecordRule, TrainConfig, TrainError};
