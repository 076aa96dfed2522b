//! The explicit flow-matching training loop (science.md §5.8).
//!
//! Each iteration draws x0 and x1 batches, draws t ~ Beta(1,2), re-pairs the batch with the
//! coupling, builds x_t on the path, predicts x̂1 with the relational transformer
//! (canonicalized for the sphere geometries), takes the loss and one Adam step. Every
//! `checkpoint_every` iterations the whole state goes to the scratch folder; a non-finite
//! loss stops the run before the update, so the last checkpoint stays good.

use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{backend::AutodiffBackend, ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, CurvePoint, TrainProgress};
use super::loss::flow_loss;
use super::path::{interpolate, sample_time};
use super::source::BatchSource;
use super::{FlowError, FlowSpec};
use crate::geometry::{canon::canonicalize, product::ProductGeometry};
use crate::kind::ProgressSink;
use crate::noise::Rng;
use crate::rt::{graph::GraphSpec, model::RelationalTransformer};

/// How long and how fast to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub iterations: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub checkpoint_every: usize,
    /// Iterations averaged into one point of the training curve.
    pub curve_every: usize,
    pub seed: u64,
}

/// The x0 and x1 batch sources of a run.
pub struct FlowData {
    pub source: BatchSource,
    pub target: BatchSource,
}

/// The result of a (possibly interrupted) run.
pub struct TrainOutcome {
    /// The model record (named MessagePack, full precision); deterministic in the settings.
    pub model_bytes: Vec<u8>,
    pub curve: Vec<CurvePoint>,
    pub iterations_done: usize,
    pub is_finished: bool,
}

pub type ModelRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

fn record_error(path: &Path, e: impl std::fmt::Display) -> FlowError {
    FlowError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

/// The model's record as bytes.
pub fn model_bytes<B: burn::tensor::backend::Backend>(model: &RelationalTransformer<B>) -> Result<Vec<u8>, FlowError> {
    ModelRecorder::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| record_error(Path::new("model"), e))
}

fn to_tensor<B: burn::tensor::backend::Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Trains (or resumes) the flow described by `spec`. `stop_after` ends the run early after
/// that many iterations, as a kill would (used to test resumption).
pub fn train<B: AutodiffBackend>(
    spec: &FlowSpec,
    settings: &TrainSettings,
    data: &FlowData,
    scratch: &Path,
    device: &B::Device,
    progress: &dyn ProgressSink,
    stop_after: Option<usize>,
) -> Result<TrainOutcome, FlowError> {
    let fingerprint = blake3::hash(
        serde_json::to_string(&(spec, settings)).expect("settings serialize to JSON").as_bytes(),
    )
    .to_hex()
    .to_string();
    let mut model = spec.rt.init::<B>(settings.seed, device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<B, RelationalTransformer<B>>();
    let recorder = ModelRecorder::default();
    let mut state = match checkpoint::load(scratch, &fingerprint)? {
        Some((state, model_record, optim_record)) => {
            let record = recorder.load(model_record, device).map_err(|e| record_error(scratch, e))?;
            model = model.load_record(record);
            let record = recorder.load(optim_record, device).map_err(|e| record_error(scratch, e))?;
            optim = optim.load_record(record);
            state
        }
        None => {
            let mut rng = Rng::derive(settings.seed, "flow-training");
            let source_loader = data.source.loader(&mut rng);
            let target_loader = data.target.loader(&mut rng);
            TrainProgress {
                iteration: 0,
                rng,
                source_loader,
                target_loader,
                curve: Vec::new(),
                window_sum: 0.0,
                window_len: 0,
                last_finite_loss: None,
                fingerprint: fingerprint.clone(),
                model_file: String::new(),
                optim_file: String::new(),
            }
        }
    };
    let layout = &spec.layout;
    let p = layout.num_params();
    let batch = settings.batch_size;
    let graph = GraphSpec::new(layout, spec.time_channel);
    let product = ProductGeometry::new(layout);
    let total = settings.iterations as u64;
    while state.iteration < settings.iterations {
        if stop_after.is_some_and(|k| state.iteration >= k) {
            return Ok(TrainOutcome {
                model_bytes: model_bytes(&model)?,
                curve: state.curve,
                iterations_done: state.iteration,
                is_finished: false,
            });
        }
        let rng = &mut state.rng;
        let x0 = data.source.next_batch(batch, state.source_loader.as_mut(), rng);
        let x1 = data.target.next_batch(batch, state.target_loader.as_mut(), rng);
        let t: Vec<f32> = (0..batch).map(|_| sample_time(rng)).collect();
        let pairs = spec.coupling.pair(&x0, &x1, p, rng);
        let mut x0_paired = Vec::with_capacity(batch * p);
        let mut x1_paired = Vec::with_capacity(batch * p);
        for &(i, j) in &pairs {
            x0_paired.extend_from_slice(&x0[i * p..(i + 1) * p]);
            x1_paired.extend_from_slice(&x1[j * p..(j + 1) * p]);
        }
        let xt = interpolate(spec.geometry, &product, &x0_paired, &x1_paired, &t, spec.sigma, rng);

        let xt = to_tensor::<B, 2>(xt, [batch, p], device);
        let t = to_tensor::<B, 1>(t, [batch], device);
        let x1 = to_tensor::<B, 2>(x1_paired, [batch, p], device);
        let mut pred = model.forward(xt, t, &graph);
        if spec.geometry.is_canonical() {
            pred = canonicalize(pred, layout);
        }
        let loss = flow_loss(spec.geometry, pred, x1, layout);
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            return Err(FlowError::NonFiniteLoss {
                iteration: state.iteration + 1,
                value,
                last_finite: state.last_finite_loss.map_or_else(|| "none".to_owned(), |l| format!("{l}")),
            });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(settings.lr, model, grads);

        state.iteration += 1;
        state.last_finite_loss = Some(value);
        state.window_sum += value;
        state.window_len += 1;
        if state.window_len == settings.curve_every || state.iteration == settings.iterations {
            state.curve.push(CurvePoint { iteration: state.iteration, loss: state.window_sum / state.window_len as f64 });
            state.window_sum = 0.0;
            state.window_len = 0;
        }
        progress.progress(state.iteration as u64, total, "it");
        progress.metric("loss", value);
        if state.iteration % settings.checkpoint_every == 0 && state.iteration < settings.iterations {
            state.model_file = format!("model-{}.mpk", state.iteration);
            state.optim_file = format!("optim-{}.mpk", state.iteration);
            let optim_bytes = recorder.record(optim.to_record(), ()).map_err(|e| record_error(scratch, e))?;
            checkpoint::save(scratch, &state, &model_bytes(&model)?, &optim_bytes)?;
        }
    }
    Ok(TrainOutcome {
        model_bytes: model_bytes(&model.valid())?,
        curve: state.curve,
        iterations_done: state.iteration,
        is_finished: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupling::Coupling;
    use crate::flow::source::prior_set;
    use crate::flow::{SourceMode, SourceSpec};
    use crate::geometry::Geometry;
    use crate::kind::NoProgress;
    use crate::layout::Layout;
    use crate::rt::{graph::TimeChannel, model::RtConfig};
    use std::path::PathBuf;

    type A = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wfpipe-flow-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn setup(geometry: Geometry, coupling: Coupling) -> (FlowSpec, TrainSettings, FlowData) {
        let layout = Layout(vec![3, 2, 2]);
        let spec = FlowSpec {
            geometry,
            coupling,
            layout: layout.clone(),
            rt: RtConfig::for_layout(&layout, 4, 1, 1),
            time_channel: TimeChannel::Faithful,
            sigma: 1e-3,
            source: SourceSpec { mode: SourceMode::Fixed, std: 0.1, count: 16, seed: 1 },
        };
        let settings =
            TrainSettings { iterations: 12, batch_size: 4, lr: 1e-2, checkpoint_every: 5, curve_every: 3, seed: 7 };
        let mut rng = Rng::seed_from(2);
        let canonical = geometry.is_canonical();
        let data = FlowData {
            source: BatchSource::Rows { rows: prior_set(&layout, 16, 0.1, canonical, &mut rng), p: layout.num_params() },
            target: BatchSource::Rows { rows: prior_set(&layout, 16, 1.0, canonical, &mut rng), p: layout.num_params() },
        };
        (spec, settings, data)
    }

    #[test]
    fn a_killed_run_resumes_to_identical_model_bytes() {
        for (geometry, coupling) in [(Geometry::Euclidean, Coupling::Ot), (Geometry::Geometric, Coupling::Independent)] {
            let (spec, settings, data) = setup(geometry, coupling);
            let device = Default::default();
            let whole_dir = scratch(&format!("whole-{}", geometry.name()));
            let whole = train::<A>(&spec, &settings, &data, &whole_dir, &device, &NoProgress, None).expect("trains");
            assert!(whole.is_finished);
            let killed_dir = scratch(&format!("killed-{}", geometry.name()));
            let partial =
                train::<A>(&spec, &settings, &data, &killed_dir, &device, &NoProgress, Some(8)).expect("trains");
            assert!(!partial.is_finished);
            assert_eq!(partial.iterations_done, 8);
            let resumed = train::<A>(&spec, &settings, &data, &killed_dir, &device, &NoProgress, None).expect("resumes");
            assert!(resumed.is_finished);
            assert_eq!(whole.model_bytes, resumed.model_bytes, "{} model bytes differ", geometry.name());
            // Curve values pass through the JSON checkpoint, whose float parsing may differ
            // in the last bit; the model itself must be bit-identical.
            assert_eq!(whole.curve.len(), resumed.curve.len());
            for (a, b) in whole.curve.iter().zip(&resumed.curve) {
                assert_eq!(a.iteration, b.iteration);
                assert!((a.loss - b.loss).abs() <= 1e-12 * a.loss.abs(), "{a:?} vs {b:?}");
            }
            assert_eq!(whole.curve.len(), 4);
            assert!(whole.curve.iter().all(|c| c.loss.is_finite()));
            let _ = std::fs::remove_dir_all(whole_dir);
            let _ = std::fs::remove_dir_all(killed_dir);
        }
    }

    #[test]
    fn a_non_finite_loss_fails_with_the_iteration_and_keeps_the_checkpoint() {
        let (spec, settings, mut data) = setup(Geometry::Euclidean, Coupling::Independent);
        let device = Default::default();
        let dir = scratch("nan");
        // Finite targets for the first checkpoint, then a poisoned set.
        let mut short = settings.clone();
        short.iterations = 100;
        train::<A>(&spec, &short, &data, &dir, &device, &NoProgress, Some(6)).expect("trains");
        if let BatchSource::Rows { rows, .. } = &mut data.target {
            rows.iter_mut().for_each(|v| *v = f32::NAN);
        }
        match train::<A>(&spec, &short, &data, &dir, &device, &NoProgress, None) {
            Err(FlowError::NonFiniteLoss { iteration, last_finite, .. }) => {
                assert_eq!(iteration, 6, "resumed from the checkpoint at 5, failed on the next step");
                assert_ne!(last_finite, "none");
            }
            other => panic!("expected a non-finite loss error, got {:?}", other.map(|o| o.iterations_done)),
        }
        assert!(dir.join("state.json").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
