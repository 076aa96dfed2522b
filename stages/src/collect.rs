//! Trajectory collection (docs/science.md 2.1-2.3): independent training runs from the
//! N(0, 0.1²) init, recording the weights by the rule of 2.1.
//!
//! Run `r` draws its init and its shuffles from its own seeded streams, so a run's result
//! does not depend on which other runs exist, on their order, or on the thread count.
//! Finished runs are written to a checkpoint folder as they complete; a re-run loads them
//! instead of training them again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::layout::Layout;
use crate::mlp::{self, grad::Workspace, MlpConfig, RecordRule, TrainConfig, TrainError};
use crate::rng;
use crate::weights::{WeightSet, WeightsError};

/// Everything that defines a collection.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectConfig {
    pub layout: Layout,
    pub runs: usize,
    pub train: TrainConfig,
    pub record: RecordRule,
    pub eval_batch: usize,
    pub seed: u64,
}

/// Final metrics of one run (after its last optimizer step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub run: usize,
    pub records: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
}

/// One finished run: its recorded states and final metrics.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub records: WeightSet,
    pub metrics: RunMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("run {run}: {source}")]
    Train {
        run: usize,
        #[source]
        source: TrainError,
    },
    #[error("run {run} recorded nothing: check skip_epochs < epochs")]
    NoRecords { run: usize },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
}

/// Train run `run` and evaluate it.
pub fn run_one(config: &CollectConfig, dataset: &Dataset, run: usize) -> Result<RunResult, CollectError> {
    let layout = &config.layout;
    let mut theta = MlpConfig::new(layout.clone()).init(&mut rng::stream(config.seed, "collect init", run as u64));
    let mut shuffle = rng::stream(config.seed, "collect shuffle", run as u64);
    let mut data = Vec::new();
    let (mut epochs, mut steps) = (Vec::new(), Vec::new());
    mlp::train(layout, &mut theta, &dataset.train, &config.train, Some(config.record), &mut shuffle, |epoch, step, state| {
        data.extend_from_slice(state);
        epochs.push(epoch as i64);
        steps.push(step as i64);
    })
    .map_err(|source| CollectError::Train { run, source })?;
    if epochs.is_empty() {
        return Err(CollectError::NoRecords { run });
    }
    let count = epochs.len();
    let records = WeightSet::new(layout.clone(), data)?
        .with_column("run", vec![run as i64; count])?
        .with_column("epoch", epochs)?
        .with_column("step", steps)?;
    let mut ws = Workspace::default();
    let mut eval = |split| mlp::evaluate(layout, &theta, split, config.eval_batch, &mut ws);
    let (train, val, test) = (eval(&dataset.train), eval(&dataset.val), eval(&dataset.test));
    let metrics = RunMetrics {
        run,
        records: count,
        train_loss: train.loss,
        train_accuracy: train.accuracy,
        val_loss: val.loss,
        val_accuracy: val.accuracy,
        test_loss: test.loss,
        test_accuracy: test.accuracy,
    };
    Ok(RunResult { records, metrics })
}

/// Where finished runs are kept between attempts.
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(dir: &Path) -> Self {
        Checkpoints { dir: dir.to_owned() }
    }

    fn weights_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("run-{run:05}.safetensors"))
    }

    fn metrics_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("run-{run:05}.json"))
    }

    /// A finished run, if its checkpoint is complete and matches the layout.
    pub fn load(&self, run: usize, layout: &Layout) -> Option<RunResult> {
        // The metrics file is written last, so its presence marks a complete checkpoint.
        let metrics: RunMetrics = serde_json::from_slice(&std::fs::read(self.metrics_path(run)).ok()?).ok()?;
        let records = WeightSet::read(&self.weights_path(run)).ok()?;
        (records.layout == *layout && metrics.run == run && records.count == metrics.records)
            .then_some(RunResult { records, metrics })
    }

    pub fn save(&self, result: &RunResult) -> Result<(), CollectError> {
        let run = result.metrics.run;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| CollectError::Checkpoint { path: self.dir.clone(), reason: e.to_string() })?;
        result.records.write(&self.weights_path(run))?;
        let json = serde_json::to_vec(&result.metrics).expect("run metrics always serialize");
        crate::weights::write_atomic(&self.metrics_path(run), |w| std::io::Write::write_all(w, &json))?;
        Ok(())
    }
}

/// Run the whole collection on `threads` threads, resuming from `checkpoints`.
/// `on_run_done(done, total)` is called after every finished run.
pub fn collect(
    config: &CollectConfig,
    dataset: &Dataset,
    checkpoints: &Checkpoints,
    threads: usize,
    on_run_done: &(dyn Fn(u64, u64) + Sync),
) -> Result<(WeightSet, Vec<RunMetrics>), CollectError> {
    let total = config.runs as u64;
    let done = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| CollectError::Checkpoint { path: PathBuf::new(), reason: format!("thread pool: {e}") })?;
    let results: Vec<Result<RunResult, CollectError>> = pool.install(|| {
        (0..config.runs)
            .into_par_iter()
            .map(|run| {
                let result = match checkpoints.load(run, &config.layout) {
                    Some(done) => done,
                    None => {
                        let result = run_one(config, dataset, run)?;
                        checkpoints.save(&result)?;
                        result
                    }
                };
                on_run_done(done.fetch_add(1, Ordering::SeqCst) + 1, total);
                Ok(result)
            })
            .collect()
    });
    let results: Vec<RunResult> = results.into_iter().collect::<Result<_, _>>()?;
    let metrics = results.iter().map(|r| r.metrics).collect();
    Ok((concat(&config.layout, results)?, metrics))
}

/// All runs' records in run order, one weight set.
fn concat(layout: &Layout, results: Vec<RunResult>) -> Result<WeightSet, CollectError> {
    let total: usize = results.iter().map(|r| r.records.data.len()).sum();
    let mut data = Vec::with_capacity(total);
    let mut columns: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for result in results {
        data.extend_from_slice(&result.records.data);
        for (name, values) in result.records.columns {
            columns.entry(name).or_default().extend(values);
        }
    }
    let mut set = WeightSet::new(layout.clone(), data)?;
    for (name, values) in columns {
        set.set_column(&name, values)?;
    }
    Ok(set)
}
