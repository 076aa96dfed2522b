//! The relational transformer over dense weight graphs (science.md §6).
//!
//! [`model::RtConfig`] builds a [`model::RelationalTransformer`]; [`graph::GraphSpec`] turns a
//! layout into the dense graph it runs on; [`layer::RtLayer`] is one attention + update layer;
//! [`init::ParamInit`] draws the parameters reproducibly.

pub mod dense;
pub mod fused;
pub mod graph;
pub mod init;
pub mod layer;
pub mod model;
