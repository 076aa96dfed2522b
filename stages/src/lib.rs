//! The science of wfpipe: typed parameters + input artifacts -> output files.
//!
//! This crate knows nothing of DAGs, caches or schedulers. Each stage kind implements
//! [`kind::StageKind`]; [`registry`] lists them for the orchestrator.

pub mod align;
pub mod assignment;
pub mod backend;
pub mod collect;
pub mod coupling;
pub mod data;
pub mod declare;
pub mod eval;
pub mod flow;
pub mod geometry;
pub mod guidance;
pub mod kind;
pub mod kinds;
pub mod layout;
pub mod mlp;
pub mod noise;
pub mod rng;
pub mod rows;
pub mod rt;
pub mod sample;
pub mod stats;
pub mod subnormal;
pub mod weights;
pub mod words;

use kind::StageKind;

/// Every science stage kind this crate provides.
pub fn registry() -> Vec<Box<dyn StageKind>> {
    vec![
        Box::new(kinds::collect::Collect),
        Box::new(kinds::toy_data::ToyData),
        Box::new(kinds::align::Align),
        Box::new(kinds::canonicalize::Canonicalize),
        Box::new(kinds::barriers::Barriers),
        Box::new(kinds::train_flow::TrainFlow),
        Box::new(kinds::sample::Sample),
        Box::new(kinds::evaluate::Evaluate),
        Box::new(kinds::finetune::Finetune),
    ]
}
