//! What executors report while a pipeline runs; renderers turn it into bars, lines or JSON.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub enum Event {
    Planned { total: usize, cached: usize, to_run: usize },
    Started { instance: String, key: String, gpus: Vec<u32> },
    /// A SLURM job was queued (local runs go straight to Started).
    Queued { instance: String, job: String },
    Progress { instance: String, step: u64, total: u64, unit: String },
    Metric { instance: String, name: String, value: f64 },
    /// `by_other`: another wfpipe process computed the key meanwhile.
    Finished { instance: String, seconds: f64, by_other: bool },
    Failed { instance: String, message: String, log: PathBuf, code: Option<i32> },
    Skipped { instance: String, because: String },
}

pub trait EventSink {
    fn event(&mut self, event: Event);
    fn finish(&mut self) {}
}

/// Collects events (tests, library use).
#[derive(Default)]
pub struct Recorder(pub Vec<Event>);

impl EventSink for Recorder {
    fn event(&mut self, event: Event) {
        self.0.push(event);
    }
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub computed: Vec<String>,
    pub by_other: Vec<String>,
    pub failed: Vec<(String, String, PathBuf)>,
    pub skipped: Vec<(String, String)>,
    pub interrupted: bool,
}

impl RunSummary {
    pub fn record(&mut self, e: &Event) {
        match e {
            Event::Finished { instance, by_other: false, .. } => self.computed.push(instance.clone()),
            Event::Finished { instance, by_other: true, .. } => self.by_other.push(instance.clone()),
            Event::Failed { instance, message, log, .. } => self.failed.push((instance.clone(), message.clone(), log.clone())),
            Event::Skipped { instance, because } => self.skipped.push((instance.clone(), because.clone())),
            _ => {}
        }
    }

    pub fn is_success(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && !self.interrupted
    }
}
