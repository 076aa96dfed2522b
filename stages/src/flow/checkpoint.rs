//! Periodic training checkpoints in a scratch folder (model, optimizer state, RNG and loader
//! positions, curve so far), so a killed run resumes where it stopped and ends with the
//! same model bytes as an uninterrupted one.
//!
//! Layout: `model-<iter>.mpk`, `optim-<iter>.mpk`, `average-<iter>.bin` (only with a weight
//! average) and `state.json`. The state file is replaced last with an atomic rename and
//! names the files it belongs to, so a crash mid-write leaves the previous checkpoint
//! intact.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::source::LoaderState;
use super::FlowError;
use crate::noise::ResumableRng;

const STATE_FILE: &str = "state.json";

/// One point of the training curve: the mean loss over a window of iterations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Iterations completed at the end of the window.
    pub iteration: usize,
    pub loss: f64,
}

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    /// Iterations completed.
    pub iteration: usize,
    pub rng: ResumableRng,
    pub source_loader: Option<LoaderState>,
    pub target_loader: Option<LoaderState>,
    pub curve: Vec<CurvePoint>,
    pub window_sum: f64,
    pub window_len: usize,
    pub last_finite_loss: Option<f64>,
    /// The first step's loss, the reference of the divergence bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_loss: Option<f64>,
    /// A fingerprint of the run's settings; a checkpoint of other settings is ignored.
    pub fingerprint: String,
    pub model_file: String,
    pub optim_file: String,
    /// The weight average's file; empty without one (and then not written, so a run
    /// without an average keeps the state file of earlier versions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub average_file: String,
}

/// A checkpoint read back: progress and the bytes of the files it names.
pub struct Checkpoint {
    pub progress: TrainProgress,
    pub model: Vec<u8>,
    pub optim: Vec<u8>,
    pub average: Option<Vec<u8>>,
}

impl TrainProgress {
    fn files(&self) -> impl Iterator<Item = &String> {
        [&self.model_file, &self.optim_file, &self.average_file].into_iter().filter(|name| !name.is_empty())
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> FlowError {
    move |source| FlowError::Io { context, source }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FlowError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("renaming {}", tmp.display())))
}

/// Writes a checkpoint and removes the files of the previous one.
/// `average` goes to `progress.average_file` and must be given exactly when that is set.
pub fn save(
    dir: &Path,
    progress: &TrainProgress,
    model: &[u8],
    optim: &[u8],
    average: Option<&[u8]>,
) -> Result<(), FlowError> {
    assert_eq!(average.is_some(), !progress.average_file.is_empty(), "the average and its file name go together");
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let previous = load_state(dir, &progress.fingerprint)?;
    write_atomic(&dir.join(&progress.model_file), model)?;
    write_atomic(&dir.join(&progress.optim_file), optim)?;
    if let Some(bytes) = average {
        write_atomic(&dir.join(&progress.average_file), bytes)?;
    }
    let state = serde_json::to_vec(progress).map_err(|e| FlowError::Checkpoint {
        path: dir.join(STATE_FILE),
        reason: e.to_string(),
    })?;
    write_atomic(&dir.join(STATE_FILE), &state)?;
    if let Some(old) = previous {
        let current: Vec<&String> = progress.files().collect();
        for name in old.files().filter(|name| !current.contains(name)) {
            // A leftover file only costs space; failing to remove it is not an error.
            let _ = fs::remove_file(dir.join(name));
        }
    }
    Ok(())
}

fn load_state(dir: &Path, fingerprint: &str) -> Result<Option<TrainProgress>, FlowError> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FlowError::Io { context: format!("reading {}", path.display()), source: e }),
    };
    let progress: TrainProgress =
        serde_json::from_slice(&bytes).map_err(|e| FlowError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
    Ok((progress.fingerprint == fingerprint).then_some(progress))
}

/// The latest checkpoint of a run with this fingerprint.
pub fn load(dir: &Path, fingerprint: &str) -> Result<Option<Checkpoint>, FlowError> {
    let Some(progress) = load_state(dir, fingerprint)? else {
        return Ok(None);
    };
    let read = |name: &str| -> Result<Vec<u8>, FlowError> {
        let path: PathBuf = dir.join(name);
        fs::read(&path).map_err(io(format!("reading {}", path.display())))
    };
    let model = read(&progress.model_file)?;
    let optim = read(&progress.optim_file)?;
    let average = if progress.average_file.is_empty() { None } else { Some(read(&progress.average_file)?) };
    Ok(Some(Checkpoint { progress, model, optim, average }))
}
