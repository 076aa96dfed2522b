//! Evaluation of weight sets (docs/science.md section 8): per-network quality, functional
//! diversity, Bayesian model averaging, the distance of samples to their targets, the toy statistics, and fine-tuning curves from a
//! learned initialization.
//!
//! Everything here works on flat weight vectors and a [`crate::data::Split`]; the stage
//! kinds in [`crate::kinds::evaluate`] and [`crate::kinds::finetune`] only parse
//! parameters, load inputs and emit rows.

pub mod bma;
pub mod diversity;
pub mod finetune;
pub mod metrics;
pub mod novelty;
pub mod predict;
pub mod toy;

/// Everything that can go wrong evaluating a weight set.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error("no networks to evaluate")]
    NoNetworks,
    #[error("the evaluation split is empty")]
    EmptySplit,
    #[error("network {network} has {found} values but layout {layout} needs {expected}")]
    WrongLength { network: usize, layout: crate::layout::Layout, expected: usize, found: usize },
    #[error("split rows have {found} features but layout {layout} reads {expected}")]
    WrongFeatures { layout: crate::layout::Layout, expected: usize, found: usize },
    #[error("a label is {label} but layout {layout} has only {classes} outputs")]
    LabelOutOfRange { layout: crate::layout::Layout, label: u32, classes: usize },
    #[error("{what} must be positive")]
    ZeroSize { what: &'static str },
}
