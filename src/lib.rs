//! wfpipe: declarative, content-addressed experiment pipelines.
//!
//! A pipeline file declares stages; [`pipeline`] checks it and expands sweeps into named
//! instances, [`key`] gives each a content hash, [`cache`] stores finished results
//! atomically, [`executor`]s run what is missing as `exec-stage` processes, and
//! [`ops`] holds the user-visible operations behind the [`cli`].

pub mod cache;
pub mod cli;
pub mod dag;
pub mod event;
pub mod exec_stage;
pub mod executor;
pub mod job;
pub mod key;
pub mod kinds;
pub mod machine;
pub mod orphans;
pub mod ops;
pub mod pipeline;
pub mod project_path;
pub mod render;
pub mod report;
pub mod scheduler;
pub mod scratch;
pub mod spec;
pub mod stale;
pub mod table;
