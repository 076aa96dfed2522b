//! Executors run the instances a plan says must be computed. Each instance is a
//! `wfpipe exec-stage` process; executors differ only in where that process runs.

pub mod local;
pub mod slurm;


use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use wfpipe_stages::kind::BackendChoice;

use crate::cache::Cache;
use crate::event::{EventSink, RunSummary};
use crate::pipeline::Pipeline;

pub struct RunRequest<'a> {
    pub pipeline: &'a Pipeline,
    pub cache: &'a Cache,
    /// Instances to compute, in topological order; every other input is cached.
    pub todo: Vec<usize>,
    pub data_dir: PathBuf,
    pub backend: BackendChoice,
    pub keep_going: bool,
}

pub trait Executor {
    fn execute(&mut self, req: &RunRequest<'_>, sink: &mut dyn EventSink) -> RunSummary;
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Catch Ctrl-C / SIGTERM so executors can stop their children and leave the cache
/// consistent instead of dying mid-way.
pub fn install_interrupt_handler() {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, &INTERRUPTED) {
            tracing::warn!(signal, error = %e, "cannot catch the signal; an interrupt will stop the run without cleanup");
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
