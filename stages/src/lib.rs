//! The science of wfpipe: typed parameters + input artifacts -> output files.
//!
//! This crate knows nothing of DAGs, caches or schedulers. Each stage kind implements
//! [`kind::StageKind`]; [`registry`] lists them for the orchestrator.

pub mod assignment;
pub mod backend;
pub mod coupling;
pub mod flow;
pub mod geometry;
pub mod kind;
pub mod layout;
pub mod noise;
pub mod rt;
pub mod sample;

use kind::StageKind;

/// Every science stage kind this crate provides.
pub fn registry() -> Vec<Box<dyn StageKind>> {
    Vec::new()
}
