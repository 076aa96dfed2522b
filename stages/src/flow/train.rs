//! The explicit flow-matching training loop (docs/science.md §5.8).
//!
//! Each iteration draws x0 and x1 batches, draws t ~ Beta(1,2), re-pairs the batch with the
//! coupling, builds x_t on the path, turns the relational transformer's output into x̂1
//! ([`Estimator`]: read as x̂1 or as a velocity, canonicalized for the sphere geometries),
//! takes the loss and one Adam step. Every `checkpoint_every` iterations the whole state
//! goes to the scratch folder; a non-finite loss stops the run before the update, so the
//! last checkpoint stays good.

use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{adaptor::OptimizerAdaptor, AdamConfig, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::adam::Adam;
use super::checkpoint::{self, Checkpoint, CurvePoint, TrainProgress};
use super::ema::WeightAverage;
use super::estimate::Estimator;
use super::loss::flow_loss;
use super::path::{interpolate, sample_time};
use super::source::BatchSource;
use super::{FlowError, FlowSpec};
use crate::geometry::product::ProductGeometry;
use crate::kind::ProgressSink;
use crate::noise::ResumableRng;
use crate::rt::fused::{FusedGraph, FusedRt, Tape};
use crate::rt::{graph::GraphSpec, model::RelationalTransformer};

/// How long and how fast to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub iterations: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// How the learning rate moves over the run (constant in the thesis).
    pub schedule: LrSchedule,
    pub checkpoint_every: usize,
    /// Iterations averaged into one point of the training curve.
    pub curve_every: usize,
    pub seed: u64,
    /// Decay of the exponential moving average of the weights that becomes the trained
    /// model ([`super::ema`]); 0 hands out the last iterate (the thesis). Left out of the
    /// serialized settings when 0, so runs without it keep their fingerprints and files.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ema: f64,
    /// A step whose loss exceeds this multiple of the first step's loss stops the run as
    /// diverged. It only ever stops a run, never changes one, so it is not part of the
    /// settings' fingerprint.
    #[serde(skip, default = "default_max_loss_ratio")]
    pub max_loss_ratio: f64,
}

/// How far above its first loss a run may go before it counts as diverged.
pub const MAX_LOSS_RATIO: f64 = 1e4;

fn default_max_loss_ratio() -> f64 {
    MAX_LOSS_RATIO
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

/// The learning rate over a run. The thesis trains at a constant rate for 250,000 steps;
/// a run cut to a few thousand steps needs a large rate to move and a small one to settle,
/// which a cosine decay gives in one run. The rate depends on the iteration only, so a
/// resumed run follows the same schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    Constant,
    /// Linear warm-up over `warmup` steps, then a half cosine from `lr` to 0 at the last step.
    Cosine {
        warmup: usize,
    },
}

impl LrSchedule {
    pub const NAMES: &'static [&'static str] = &["constant", "cosine"];

    /// The rate of step `iteration` (0-based) of `iterations`.
    pub fn rate(&self, lr: f64, iteration: usize, iterations: usize) -> f64 {
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine { warmup } => {
                let ramp = if iteration < warmup { (iteration + 1) as f64 / warmup as f64 } else { 1.0 };
                let progress = iteration as f64 / iterations.max(1) as f64;
                lr * ramp * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
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
    /// The finished model's loss along the path (empty for an interrupted run).
    pub loss_by_time: Vec<TimeLoss>,
}

pub type ModelRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

fn record_error(path: &Path, e: impl std::fmt::Display) -> FlowError {
    FlowError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

/// The model's record as bytes.
pub fn model_bytes<B: burn::tensor::backend::Backend>(model: &RelationalTransformer<B>) -> Result<Vec<u8>, FlowError> {
    ModelRecorder::default().record(model.clone().into_record(), ()).map_err(|e| record_error(Path::new("model"), e))
}

fn to_tensor<B: burn::tensor::backend::Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The trainable velocity network behind the loop. How a step is computed (burn autodiff
/// on any backend, or the fused CPU engine) is its own business; the loop owns batches,
/// curve, checkpoints and failure handling.
pub trait FlowModel {
    /// Estimates `x̂1` for `(x_t, t)` (as the flow's [`Estimator`] reads the output), takes
    /// the loss against `x1` and, only when it is finite, one Adam step. Returns the loss.
    fn step(&mut self, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>, lr: f64) -> f64;
    /// The same loss without a step.
    fn loss(&mut self, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>) -> f64;
    /// The model record (named MessagePack, full precision).
    fn model_bytes(&self) -> Result<Vec<u8>, FlowError>;
    fn optim_bytes(&self) -> Result<Vec<u8>, FlowError>;
    /// Restores the state written by `model_bytes` and `optim_bytes`.
    fn restore(&mut self, model: Vec<u8>, optim: Vec<u8>, scratch: &Path) -> Result<(), FlowError>;
    /// The trainable parameters as one flat vector, in an order fixed by the model.
    fn params(&self) -> Vec<f32>;
    /// Replaces the parameters with `values`, in the order of [`FlowModel::params`].
    fn set_params(&mut self, values: &[f32]);
}

/// The model as a burn module trained with burn's autodiff and Adam (the GPU path).
pub struct BurnFlow<B: AutodiffBackend> {
    model: Option<RelationalTransformer<B>>,
    optim: OptimizerAdaptor<burn::optim::Adam, RelationalTransformer<B>, B>,
    spec: FlowSpec,
    estimator: Estimator,
    graph: GraphSpec,
    device: B::Device,
    /// Recompute each layer in the backward pass instead of keeping its activations
    /// ([`crate::rt::recompute`]): the same gradients in less memory.
    recompute: bool,
}

impl<B: AutodiffBackend> BurnFlow<B> {
    pub fn new(spec: &FlowSpec, seed: u64, device: &B::Device) -> Self {
        BurnFlow {
            model: Some(spec.rt.init::<B>(seed, device)),
            optim: AdamConfig::new().with_epsilon(1e-8).init::<B, RelationalTransformer<B>>(),
            spec: spec.clone(),
            estimator: spec.estimator(&spec.layout),
            graph: spec.graph(&spec.layout),
            device: device.clone(),
            recompute: false,
        }
    }

    /// The same flow, recomputing layers in the backward pass when `recompute` is set.
    pub fn recomputing(self, recompute: bool) -> Self {
        BurnFlow { recompute, ..self }
    }

    fn model(&self) -> &RelationalTransformer<B> {
        self.model.as_ref().expect("the model is only taken during a step")
    }
}

impl<B: AutodiffBackend> FlowModel for BurnFlow<B> {
    fn step(&mut self, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>, lr: f64) -> f64 {
        let (batch, p) = (t.len(), self.spec.layout.num_params());
        let model = self.model.take().expect("the model is only taken during a step");
        let xt = to_tensor::<B, 2>(xt, [batch, p], &self.device);
        let x1 = to_tensor::<B, 2>(x1, [batch, p], &self.device);
        let t = to_tensor::<B, 1>(t, [batch], &self.device);
        let loss = |out: Tensor<B, 2>| flow_loss(self.spec.geometry, self.estimator.apply(out, xt.clone(), t.clone()), x1, &self.spec.layout);
        let (value, grads) = model.loss_and_gradients(xt.clone(), t.clone(), &self.graph, self.recompute, loss);
        self.model = Some(match grads {
            Some(grads) => self.optim.step(lr, model, grads),
            None => model,
        });
        value
    }

    fn loss(&mut self, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>) -> f64 {
        let (batch, p) = (t.len(), self.spec.layout.num_params());
        let model = self.model().valid();
        let xt = to_tensor::<B::InnerBackend, 2>(xt, [batch, p], &self.device);
        let x1 = to_tensor::<B::InnerBackend, 2>(x1, [batch, p], &self.device);
        let t = to_tensor::<B::InnerBackend, 1>(t, [batch], &self.device);
        let pred = self.estimator.apply(model.forward(xt.clone(), t.clone(), &self.graph), xt, t);
        flow_loss(self.spec.geometry, pred, x1, &self.spec.layout).into_scalar().elem()
    }

    fn model_bytes(&self) -> Result<Vec<u8>, FlowError> {
        model_bytes(&self.model().valid())
    }

    fn optim_bytes(&self) -> Result<Vec<u8>, FlowError> {
        ModelRecorder::default().record(self.optim.to_record(), ()).map_err(|e| record_error(Path::new("optimizer"), e))
    }

    fn restore(&mut self, model: Vec<u8>, optim: Vec<u8>, scratch: &Path) -> Result<(), FlowError> {
        let recorder = ModelRecorder::default();
        let record = recorder.load(model, &self.device).map_err(|e| record_error(scratch, e))?;
        self.model = Some(self.model.take().expect("model present").load_record(record));
        let record = recorder.load(optim, &self.device).map_err(|e| record_error(scratch, e))?;
        self.optim = std::mem::replace(&mut self.optim, AdamConfig::new().init()).load_record(record);
        Ok(())
    }

    fn params(&self) -> Vec<f32> {
        flatten_params(&self.model().valid())
    }

    fn set_params(&mut self, values: &[f32]) {
        let model = self.model.take().expect("the model is only taken during a step");
        self.model = Some(unflatten_params(model, values));
    }
}

/// Every float parameter of `module`, in visiting order.
fn flatten_params<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    struct Flatten(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().to_vec::<f32>().expect("f32 parameters"));
        }
    }
    let mut visitor = Flatten(Vec::new());
    module.visit(&mut visitor);
    visitor.0
}

/// `module` with its float parameters replaced by `values`, in [`flatten_params`] order.
fn unflatten_params<B: Backend, M: Module<B>>(module: M, values: &[f32]) -> M {
    struct Unflatten<'a> {
        values: &'a [f32],
        at: usize,
    }
    impl<B: Backend> ModuleMapper<B> for Unflatten<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let (shape, device, trainable) = (tensor.shape(), tensor.device(), tensor.is_require_grad());
            let len = shape.num_elements();
            let data = TensorData::new(self.values[self.at..self.at + len].to_vec(), shape);
            self.at += len;
            // A fresh tensor is a constant; an autodiff parameter must stay a leaf that trains.
            Param::from_mapped_value(id, Tensor::from_data(data, &device).set_require_grad(trainable), mapper)
        }
    }
    let mut mapper = Unflatten { values, at: 0 };
    let module = module.map(&mut mapper);
    assert_eq!(mapper.at, values.len(), "parameter count mismatch");
    module
}

/// The model on the fused CPU engine ([`crate::rt::fused`]): the relational transformer's
/// forward and backward by hand, the loss and its gradient through burn (O(P) work), Adam
/// on the flat arena.
pub struct FusedFlow {
    engine: FusedRt,
    adam: Adam,
    tapes: Vec<Tape>,
    graph: FusedGraph,
    /// A module of the right shape, to write the engine's parameters as a burn record.
    template: RelationalTransformer<CpuInner>,
    spec: FlowSpec,
}

type CpuInner = burn::backend::NdArray<f32>;
type CpuAutodiff = burn::backend::Autodiff<CpuInner>;

impl FusedFlow {
    pub fn new(spec: &FlowSpec, seed: u64) -> Self {
        let template = spec.rt.init::<CpuInner>(seed, &Default::default());
        let engine = FusedRt::from_model(&template, &spec.rt);
        FusedFlow {
            adam: Adam::new(engine.map.len),
            engine,
            tapes: Vec::new(),
            graph: FusedGraph::new(&spec.graph(&spec.layout)),
            template,
            spec: spec.clone(),
        }
    }
}

/// The loss of a guess of `x1` (canonicalized first for the sphere geometries), e.g. the
/// batch mean as the mean-predictor baseline.
pub fn loss_value(spec: &FlowSpec, guess: Vec<f32>, x1: Vec<f32>) -> f64 {
    let device = Default::default();
    let (p, layout) = (spec.layout.num_params(), &spec.layout);
    let batch = guess.len() / p;
    let guess = spec.estimator(layout).finish(to_tensor::<CpuInner, 2>(guess, [batch, p], &device));
    let x1 = to_tensor::<CpuInner, 2>(x1, [batch, p], &device);
    flow_loss(spec.geometry, guess, x1, layout).into_scalar().elem()
}

/// The loss of the network output `out` at `(x_t, t)` against `x1`.
fn output_loss(spec: &FlowSpec, out: Vec<f32>, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>) -> f64 {
    let device = Default::default();
    let (p, layout) = (spec.layout.num_params(), &spec.layout);
    let batch = t.len();
    let [out, xt, x1] = [out, xt, x1].map(|v| to_tensor::<CpuInner, 2>(v, [batch, p], &device));
    let estimate = spec.estimator(layout).apply(out, xt, to_tensor::<CpuInner, 1>(t, [batch], &device));
    flow_loss(spec.geometry, estimate, x1, layout).into_scalar().elem()
}

/// The loss of the network output `out` at `(x_t, t)` against `x1`, and its gradient with
/// respect to `out`.
pub fn loss_and_gradient(spec: &FlowSpec, out: Vec<f32>, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>) -> (f64, Vec<f32>) {
    let device = Default::default();
    let (p, layout) = (spec.layout.num_params(), &spec.layout);
    let batch = t.len();
    let out = to_tensor::<CpuAutodiff, 2>(out, [batch, p], &device).require_grad();
    let [xt, x1] = [xt, x1].map(|v| to_tensor::<CpuAutodiff, 2>(v, [batch, p], &device));
    let estimate = spec.estimator(layout).apply(out.clone(), xt, to_tensor::<CpuAutodiff, 1>(t, [batch], &device));
    let loss = flow_loss(spec.geometry, estimate, x1, layout);
    let value: f64 = loss.clone().into_scalar().elem();
    let grads = loss.backward();
    let grad = out.grad(&grads).expect("the output is a leaf that requires a gradient");
    (value, grad.into_data().to_vec::<f32>().expect("f32 gradient"))
}

impl FlowModel for FusedFlow {
    fn step(&mut self, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>, lr: f64) -> f64 {
        let out = self.engine.forward_taped(&self.graph, &xt, &t, &mut self.tapes);
        let (value, dout) = loss_and_gradient(&self.spec, out, xt, t, x1);
        if value.is_finite() {
            let grads = self.engine.backward(&self.graph, &mut self.tapes, &dout);
            self.adam.update(lr, &mut self.engine.params, &grads);
        }
        value
    }

    fn loss(&mut self, xt: Vec<f32>, t: Vec<f32>, x1: Vec<f32>) -> f64 {
        let out = self.engine.predict(&self.graph, &xt, &t);
        output_loss(&self.spec, out, xt, t, x1)
    }

    fn model_bytes(&self) -> Result<Vec<u8>, FlowError> {
        model_bytes(&self.engine.to_model(self.template.clone()))
    }

    fn optim_bytes(&self) -> Result<Vec<u8>, FlowError> {
        Ok(self.adam.to_bytes())
    }

    fn restore(&mut self, model: Vec<u8>, optim: Vec<u8>, scratch: &Path) -> Result<(), FlowError> {
        let record = ModelRecorder::default().load(model, &Default::default()).map_err(|e| record_error(scratch, e))?;
        self.template = self.template.clone().load_record(record);
        self.engine = FusedRt::from_model(&self.template, &self.spec.rt);
        self.adam = Adam::from_bytes(&optim, self.engine.map.len).map_err(|e| record_error(scratch, e))?;
        Ok(())
    }

    fn params(&self) -> Vec<f32> {
        self.engine.params.clone()
    }

    fn set_params(&mut self, values: &[f32]) {
        self.engine.params.copy_from_slice(values);
    }
}

/// Trains (or resumes) the flow described by `spec` with `model` (freshly initialized
/// from `settings.seed`). `stop_after` ends the run early after that many iterations, as
/// a kill would (used to test resumption).
pub fn train(
    spec: &FlowSpec,
    settings: &TrainSettings,
    data: &FlowData,
    scratch: &Path,
    model: &mut dyn FlowModel,
    progress: &dyn ProgressSink,
    stop_after: Option<usize>,
) -> Result<TrainOutcome, FlowError> {
    let fingerprint =
        blake3::hash(serde_json::to_string(&(spec, settings)).expect("settings serialize to JSON").as_bytes())
            .to_hex()
            .to_string();
    let mut average = None;
    let mut state = match checkpoint::load(scratch, &fingerprint)? {
        Some(Checkpoint { progress, model: model_record, optim: optim_record, average: average_record }) => {
            model.restore(model_record, optim_record, scratch)?;
            if let Some(bytes) = average_record {
                let restored = WeightAverage::from_bytes(settings.ema, &bytes, model.params().len())
                    .map_err(|e| record_error(scratch, e))?;
                average = Some(restored);
            }
            progress
        }
        None => {
            let mut rng = ResumableRng::derive(settings.seed, "flow-training");
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
                first_loss: None,
                fingerprint: fingerprint.clone(),
                model_file: String::new(),
                optim_file: String::new(),
                average_file: String::new(),
            }
        }
    };
    if settings.ema > 0.0 && average.is_none() {
        average = Some(WeightAverage::new(settings.ema, model.params()));
    }
    let layout = &spec.layout;
    let batch = settings.batch_size;
    let product = ProductGeometry::new(layout);
    let total = settings.iterations as u64;
    while state.iteration < settings.iterations {
        if stop_after.is_some_and(|k| state.iteration >= k) {
            return Ok(TrainOutcome {
                model_bytes: model.model_bytes()?,
                curve: state.curve,
                iterations_done: state.iteration,
                is_finished: false,
                loss_by_time: Vec::new(),
            });
        }
        let rng = &mut state.rng;
        let x0 = data.source.next_batch(batch, state.source_loader.as_mut(), rng);
        let x1 = data.target.next_batch(batch, state.target_loader.as_mut(), rng);
        let t: Vec<f32> = (0..batch).map(|_| sample_time(rng)).collect();
        let (x0_paired, x1_paired) = spec.coupling.couple(&x0, &x1, layout, rng);
        let xt = interpolate(spec.geometry, &product, &x0_paired, &x1_paired, &t, spec.sigma, rng);
        let lr = settings.schedule.rate(settings.lr, state.iteration, settings.iterations);
        let value = model.step(xt, t, x1_paired, lr);
        if !value.is_finite() {
            return Err(FlowError::NonFiniteLoss {
                iteration: state.iteration + 1,
                value,
                last_finite: state.last_finite_loss.map_or_else(|| "none".to_owned(), |l| format!("{l}")),
            });
        }
        let first = *state.first_loss.get_or_insert(value);
        if value > settings.max_loss_ratio * first {
            return Err(FlowError::Diverged {
                iteration: state.iteration + 1,
                value,
                first,
                ratio: settings.max_loss_ratio,
            });
        }
        if let Some(average) = average.as_mut() {
            average.update(&model.params());
        }
        state.iteration += 1;
        state.last_finite_loss = Some(value);
        state.window_sum += value;
        state.window_len += 1;
        if state.window_len == settings.curve_every || state.iteration == settings.iterations {
            state
                .curve
                .push(CurvePoint { iteration: state.iteration, loss: state.window_sum / state.window_len as f64 });
            state.window_sum = 0.0;
            state.window_len = 0;
        }
        progress.progress(state.iteration as u64, total, "it");
        progress.metric("loss", value);
        if state.iteration % settings.checkpoint_every == 0 && state.iteration < settings.iterations {
            state.model_file = format!("model-{}.mpk", state.iteration);
            state.optim_file = format!("optim-{}.bin", state.iteration);
            let average_bytes = average.as_ref().map(WeightAverage::to_bytes);
            if average_bytes.is_some() {
                state.average_file = format!("average-{}.bin", state.iteration);
            }
            checkpoint::save(scratch, &state, &model.model_bytes()?, &model.optim_bytes()?, average_bytes.as_deref())?;
        }
    }
    if let Some(average) = &average {
        model.set_params(average.values());
    }
    Ok(TrainOutcome {
        model_bytes: model.model_bytes()?,
        curve: state.curve,
        iterations_done: state.iteration,
        is_finished: true,
        loss_by_time: loss_by_time(spec, settings, data, model, TIME_BINS, TIME_BIN_BATCHES),
    })
}


/// Times and batches per time of the finished model's loss profile (about 13 training
/// steps' worth of forward passes).
const TIME_BINS: usize = 10;
const TIME_BIN_BATCHES: usize = 4;

/// The trained model's loss at one time, next to what predicting the targets' mean scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeLoss {
    pub t: f64,
    pub loss: f64,
    /// The loss of predicting, for every pair, the mean of the evaluated batch's targets.
    /// It is fit to those targets, so a flow that had learned the targets' mean and
    /// ignored `x_t` would sit above it (by about B/(B−1) for a squared error), not on it.
    pub mean_predictor_loss: f64,
}

/// The loss at `bins` evenly spaced times (bin centres), each over `batches` fresh batches
/// drawn and paired as in training, from an RNG stream of its own (training is unaffected).
/// Training sees times from Beta(1, 2), mostly near 0; this shows where along the path the
/// model has learned to use its input.
pub fn loss_by_time(
    spec: &FlowSpec,
    settings: &TrainSettings,
    data: &FlowData,
    model: &mut dyn FlowModel,
    bins: usize,
    batches: usize,
) -> Vec<TimeLoss> {
    let mut rng = ResumableRng::derive(settings.seed, "loss-by-time");
    let mut source_loader = data.source.loader(&mut rng);
    let mut target_loader = data.target.loader(&mut rng);
    let (p, batch) = (spec.layout.num_params(), settings.batch_size);
    let product = ProductGeometry::new(&spec.layout);
    (0..bins)
        .map(|bin| {
            let t = (bin as f64 + 0.5) / bins as f64;
            let (mut loss, mut baseline) = (0.0, 0.0);
            for _ in 0..batches {
                let x0 = data.source.next_batch(batch, source_loader.as_mut(), &mut rng);
                let x1 = data.target.next_batch(batch, target_loader.as_mut(), &mut rng);
                let (x0_paired, x1_paired) = spec.coupling.couple(&x0, &x1, &spec.layout, &mut rng);
                let times = vec![t as f32; batch];
                let xt = interpolate(spec.geometry, &product, &x0_paired, &x1_paired, &times, spec.sigma, &mut rng);
                loss += model.loss(xt, times, x1_paired.clone());
                let mean = crate::rows::mean_row(&x1_paired, p);
                baseline += loss_value(spec, mean.repeat(batch), x1_paired);
            }
            TimeLoss { t, loss: loss / batches as f64, mean_predictor_loss: baseline / batches as f64 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coupling::Coupling;
    use crate::flow::estimate::Output;
    use crate::flow::source::prior_set;
    use crate::flow::{SourceMode, SourceSpec};
    use crate::geometry::Geometry;
    use crate::kind::NoProgress;
    use crate::layout::Layout;
    use crate::rt::{graph::TimeChannel, model::RtConfig, pairs::Attention};
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
            output: Output::Target,
            attention: Attention::Dense,
            positions: Default::default(),
        };
        let settings = TrainSettings {
            iterations: 12,
            batch_size: 4,
            lr: 1e-2,
            schedule: LrSchedule::Constant,
            checkpoint_every: 5,
            curve_every: 3,
            seed: 7,
            ema: 0.0,
            max_loss_ratio: MAX_LOSS_RATIO,
        };
        let mut rng = ResumableRng::seed_from(2);
        let canonical = geometry.is_canonical();
        let data = FlowData {
            source: BatchSource::Rows {
                rows: prior_set(&layout, 16, 0.1, canonical, &mut rng),
                p: layout.num_params(),
            },
            target: BatchSource::Rows {
                rows: prior_set(&layout, 16, 1.0, canonical, &mut rng),
                p: layout.num_params(),
            },
        };
        (spec, settings, data)
    }

    /// Runs `train` with a fresh model on the burn (`fused = false`) or fused engine.
    fn run_training(
        fused: bool,
        spec: &FlowSpec,
        settings: &TrainSettings,
        data: &FlowData,
        dir: &std::path::Path,
        stop_after: Option<usize>,
    ) -> Result<TrainOutcome, FlowError> {
        let mut model: Box<dyn FlowModel> = if fused {
            Box::new(FusedFlow::new(spec, settings.seed))
        } else {
            Box::new(BurnFlow::<A>::new(spec, settings.seed, &Default::default()))
        };
        train(spec, settings, data, dir, model.as_mut(), &NoProgress, stop_after)
    }

    #[test]
    fn a_killed_run_resumes_to_identical_model_bytes() {
        use Attention::{Dense, LayerBlocks};
        for (geometry, coupling, fused, attention) in [
            (Geometry::Euclidean, Coupling::Ot, false, Dense),
            (Geometry::Geometric, Coupling::Independent, false, Dense),
            (Geometry::Euclidean, Coupling::Ot, true, Dense),
            (Geometry::Normalized, Coupling::Independent, true, Dense),
            (Geometry::Geometric, Coupling::Ot, true, Dense),
            (Geometry::Geometric, Coupling::Independent, false, LayerBlocks),
            (Geometry::Normalized, Coupling::Ot, true, LayerBlocks),
            (Geometry::Euclidean, Coupling::Rebasin, true, LayerBlocks),
        ] {
            let (mut spec, mut settings, data) = setup(geometry, coupling);
            spec.attention = attention;
            if geometry == Geometry::Geometric && fused {
                // The rate of a resumed step must follow the schedule, not restart it.
                settings.schedule = LrSchedule::Cosine { warmup: 3 };
            }
            let tag = format!("{}-{fused}-{attention:?}", geometry.name());
            let whole_dir = scratch(&format!("whole-{tag}"));
            let whole = run_training(fused, &spec, &settings, &data, &whole_dir, None).expect("trains");
            assert!(whole.is_finished);
            let again_dir = scratch(&format!("again-{tag}"));
            let again = run_training(fused, &spec, &settings, &data, &again_dir, None).expect("trains");
            assert_eq!(whole.model_bytes, again.model_bytes, "{tag}: the same seed must give the same bytes");
            let _ = std::fs::remove_dir_all(again_dir);
            let killed_dir = scratch(&format!("killed-{tag}"));
            let partial = run_training(fused, &spec, &settings, &data, &killed_dir, Some(8)).expect("trains");
            assert!(!partial.is_finished);
            assert_eq!(partial.iterations_done, 8);
            let resumed = run_training(fused, &spec, &settings, &data, &killed_dir, None).expect("resumes");
            assert!(resumed.is_finished);
            assert_eq!(whole.model_bytes, resumed.model_bytes, "{tag}: model bytes differ");
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
    fn the_weight_average_is_the_trained_model_and_survives_a_kill() {
        for fused in [true, false] {
            let (spec, mut settings, data) = setup(Geometry::Normalized, Coupling::Independent);
            let tag = format!("ema-{fused}");
            let plain_dir = scratch(&format!("plain-{tag}"));
            let plain = run_training(fused, &spec, &settings, &data, &plain_dir, None).expect("trains");
            settings.ema = 0.9;
            let whole_dir = scratch(&format!("whole-{tag}"));
            let whole = run_training(fused, &spec, &settings, &data, &whole_dir, None).expect("trains");
            assert_ne!(plain.model_bytes, whole.model_bytes, "{tag}: the average is not the last iterate");
            // The same steps were taken: the loss curves agree.
            assert_eq!(plain.curve, whole.curve, "{tag}: the average must not change training");
            let killed_dir = scratch(&format!("killed-{tag}"));
            run_training(fused, &spec, &settings, &data, &killed_dir, Some(8)).expect("trains");
            assert!(killed_dir.join("average-5.bin").exists(), "{tag}: the checkpoint holds the average");
            let resumed = run_training(fused, &spec, &settings, &data, &killed_dir, None).expect("resumes");
            assert_eq!(whole.model_bytes, resumed.model_bytes, "{tag}: model bytes differ after a resume");
            for dir in [plain_dir, whole_dir, killed_dir] {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn recomputing_layers_trains_the_same_bytes() {
        for (geometry, attention, layers) in
            [(Geometry::Euclidean, Attention::Dense, 3), (Geometry::Geometric, Attention::LayerBlocks, 2)]
        {
            let (mut spec, settings, data) = setup(geometry, Coupling::Independent);
            spec.attention = attention;
            spec.rt = RtConfig::for_layout(&spec.layout, 4, layers, 1);
            let trained = |recompute: bool| {
                let dir = scratch(&format!("recompute-{recompute}-{attention:?}"));
                let mut model = BurnFlow::<A>::new(&spec, settings.seed, &Default::default()).recomputing(recompute);
                let outcome = train(&spec, &settings, &data, &dir, &mut model, &NoProgress, None).expect("trains");
                let _ = std::fs::remove_dir_all(&dir);
                // The optimizer record is a hash map whose bytes change from run to run; a
                // few more steps compare what it holds (Adam's moments move every update).
                let mut rng = ResumableRng::seed_from(5);
                let p = spec.layout.num_params();
                for _ in 0..3 {
                    let (xt, x1) = (rng.normal_vec(4 * p, 0.0, 0.1), rng.normal_vec(4 * p, 0.0, 0.1));
                    model.step(xt, vec![0.2, 0.4, 0.6, 0.8], x1, 1e-2);
                }
                (outcome.model_bytes, model.model_bytes().expect("model record"))
            };
            let (plain, recomputed) = (trained(false), trained(true));
            assert!(plain.0 == recomputed.0, "{geometry:?} {attention:?}: the trained model differs");
            assert!(plain.1 == recomputed.1, "{geometry:?} {attention:?}: the optimizer state differs");
        }
    }

    #[test]
    fn both_engines_expose_every_parameter_and_take_them_back() {
        let (spec, settings, _) = setup(Geometry::Geometric, Coupling::Independent);
        let fused = FusedFlow::new(&spec, settings.seed);
        let mut burn = BurnFlow::<A>::new(&spec, settings.seed, &Default::default());
        let values = burn.params();
        assert_eq!(values.len(), fused.params().len());
        assert_eq!(values.len(), burn.model().num_params());
        let before = burn.model_bytes().unwrap();
        burn.set_params(&values);
        assert_eq!(burn.model_bytes().unwrap(), before, "writing the parameters back is the identity");
        let shifted: Vec<f32> = values.iter().map(|v| v + 0.25).collect();
        burn.set_params(&shifted);
        assert_eq!(burn.params(), shifted);
        // The autodiff module still trains after its parameters were replaced.
        let mut rng = ResumableRng::seed_from(4);
        let p = spec.layout.num_params();
        let (xt, x1) = (rng.normal_vec(4 * p, 0.0, 0.1), rng.normal_vec(4 * p, 0.0, 0.1));
        let t = vec![0.2, 0.4, 0.6, 0.8];
        burn.step(xt.clone(), t.clone(), x1.clone(), 1e-2);
        assert_ne!(burn.params(), shifted, "a step after set_params moves the weights");
    }

    #[test]
    fn the_loss_without_a_step_is_the_step_loss_on_both_engines() {
        let cases = [Geometry::Euclidean, Geometry::Normalized, Geometry::Geometric]
            .into_iter()
            .flat_map(|geometry| [Output::Target, Output::Velocity].map(|output| (geometry, output)));
        for (geometry, output) in cases {
            let (mut spec, settings, data) = setup(geometry, Coupling::Independent);
            spec.output = output;
            let mut rng = ResumableRng::seed_from(3);
            let x0 = data.source.next_batch(4, data.source.loader(&mut rng).as_mut(), &mut rng);
            let x1 = data.target.next_batch(4, data.target.loader(&mut rng).as_mut(), &mut rng);
            let t = vec![0.1, 0.4, 0.7, 0.95];
            let xt = interpolate(geometry, &ProductGeometry::new(&spec.layout), &x0, &x1, &t, 0.0, &mut rng);
            let mut fused = FusedFlow::new(&spec, settings.seed);
            let mut burn = BurnFlow::<A>::new(&spec, settings.seed, &Default::default());
            let a = fused.loss(xt.clone(), t.clone(), x1.clone());
            let b = burn.loss(xt.clone(), t.clone(), x1.clone());
            assert!((a - b).abs() < 1e-5 * a.abs().max(1e-3), "{} {output:?}: fused {a} vs burn {b}", geometry.name());
            assert_eq!(
                a,
                fused.step(xt.clone(), t.clone(), x1.clone(), 1e-2),
                "the step reports the loss before it moves"
            );
            assert!(fused.loss(xt, t, x1) != a, "and the step moved the model");
        }
    }

    #[test]
    fn the_loss_profile_is_deterministic_and_its_baseline_vanishes_on_one_target() {
        let (spec, settings, mut data) = setup(Geometry::Euclidean, Coupling::Independent);
        let mut model = FusedFlow::new(&spec, settings.seed);
        let profile = loss_by_time(&spec, &settings, &data, &mut model, 5, 2);
        assert_eq!(profile, loss_by_time(&spec, &settings, &data, &mut model, 5, 2));
        let times: Vec<f64> = profile.iter().map(|p| p.t).collect();
        assert_eq!(times, vec![0.1, 0.3, 0.5, 0.7, 0.9]);
        assert!(profile.iter().all(|p| p.loss > 0.0 && p.mean_predictor_loss > 0.0));
        // Every target the same network: predicting the mean is exact.
        if let BatchSource::Rows { rows, p } = &mut data.target {
            let first = rows[..*p].to_vec();
            rows.chunks_mut(*p).for_each(|r| r.copy_from_slice(&first));
        }
        let profile = loss_by_time(&spec, &settings, &data, &mut model, 5, 2);
        assert!(profile.iter().all(|p| p.mean_predictor_loss.abs() < 1e-12), "{profile:?}");
    }

    #[test]
    fn the_cosine_schedule_warms_up_then_decays_to_zero() {
        let s = LrSchedule::Cosine { warmup: 4 };
        let rates: Vec<f64> = (0..100).map(|i| s.rate(0.01, i, 100)).collect();
        assert!((rates[0] - 0.0025).abs() < 1e-4, "first warm-up step: {}", rates[0]);
        assert!(rates[..4].windows(2).all(|w| w[1] > w[0]), "warm-up rises");
        assert!(rates[4..].windows(2).all(|w| w[1] < w[0]), "then decays");
        assert!((s.rate(0.01, 50, 100) - 0.005).abs() < 1e-12, "half the rate at mid-run");
        assert!(rates[99] < 1e-5 && rates[99] > 0.0, "last step near zero: {}", rates[99]);
        assert!((0..100).all(|i| LrSchedule::Constant.rate(0.01, i, 100) == 0.01));
    }

    #[test]
    fn a_non_finite_loss_fails_with_the_iteration_and_keeps_the_checkpoint() {
        let (spec, settings, mut data) = setup(Geometry::Euclidean, Coupling::Independent);
        let dir = scratch("nan");
        // Finite targets for the first checkpoint, then a poisoned set.
        let mut short = settings.clone();
        short.iterations = 100;
        run_training(true, &spec, &short, &data, &dir, Some(6)).expect("trains");
        if let BatchSource::Rows { rows, .. } = &mut data.target {
            rows.iter_mut().for_each(|v| *v = f32::NAN);
        }
        match run_training(true, &spec, &short, &data, &dir, None) {
            Err(FlowError::NonFiniteLoss { iteration, last_finite, .. }) => {
                assert_eq!(iteration, 6, "resumed from the checkpoint at 5, failed on the next step");
                assert_ne!(last_finite, "none");
            }
            other => panic!("expected a non-finite loss error, got {:?}", other.map(|o| o.iterations_done)),
        }
        assert!(dir.join("state.json").exists());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_diverging_run_fails_at_the_bound_and_keeps_its_checkpoint() {
        let (spec, mut settings, data) = setup(Geometry::Euclidean, Coupling::Independent);
        settings.lr = 1e6;
        settings.iterations = 200;
        settings.checkpoint_every = 1;
        let dir = scratch("diverge");
        let first_loss = match run_training(true, &spec, &settings, &data, &dir, None) {
            Err(FlowError::Diverged { iteration, value, first, .. }) => {
                assert!(value > MAX_LOSS_RATIO * first, "{value} vs first {first}");
                let state: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("a checkpoint is kept")).unwrap();
                assert_eq!(state["iteration"].as_u64(), Some(iteration as u64 - 1), "the checkpoint before the divergent step");
                first
            }
            other => panic!("expected divergence, got {:?}", other.map(|o| o.curve.last().map(|c| c.loss))),
        };
        // Without the bound the same run finishes "successfully", its loss far above the start.
        settings.max_loss_ratio = f64::INFINITY;
        let _ = std::fs::remove_dir_all(&dir);
        let unbounded = run_training(true, &spec, &settings, &data, &dir, None).expect("finite, if absurd");
        let end = unbounded.curve.last().unwrap().loss;
        assert!(end > MAX_LOSS_RATIO * first_loss, "loss went from {first_loss} to {end}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_fused_and_burn_engines_train_alike() {
        for (geometry, output, attention) in [
            (Geometry::Euclidean, Output::Target, Attention::Dense),
            (Geometry::Geometric, Output::Target, Attention::Dense),
            (Geometry::Normalized, Output::Velocity, Attention::Dense),
            (Geometry::Geometric, Output::Velocity, Attention::LayerBlocks),
        ] {
            let (mut spec, mut settings, data) = setup(geometry, Coupling::Independent);
            spec.output = output;
            spec.attention = attention;
            settings.curve_every = 1;
            let a = run_training(false, &spec, &settings, &data, &scratch("engine-burn"), None).expect("trains");
            let b = run_training(true, &spec, &settings, &data, &scratch("engine-fused"), None).expect("trains");
            // Same initial model and batches: the first loss agrees to float precision;
            // later ones drift only through burn's approximate GELU derivative.
            let (first_a, first_b) = (a.curve[0].loss, b.curve[0].loss);
            assert!((first_a - first_b).abs() < 1e-5 * first_a.abs().max(1.0), "{first_a} vs {first_b}");
            for (x, y) in a.curve.iter().zip(&b.curve) {
                assert!((x.loss - y.loss).abs() < 2e-2 * x.loss.abs().max(1e-3), "{}: {x:?} vs {y:?}", geometry.name());
            }
        }
    }

    #[test]
    fn the_readout_offset_trains_alike_on_both_engines_and_resumes_to_the_same_bytes() {
        use crate::rt::graph::Positions;
        let (mut spec, mut settings, data) = setup(Geometry::Geometric, Coupling::Independent);
        spec.output = Output::Velocity;
        spec.attention = Attention::LayerBlocks;
        spec.positions = Positions::PerNeuron;
        spec.rt = spec.rt.clone().with_positions(&spec.layout, Positions::PerNeuron);
        settings.curve_every = 1;
        let plain = run_training(true, &spec, &settings, &data, &scratch("offset-plain"), None).expect("trains");
        spec.rt = spec.rt.clone().with_offset(&spec.layout, true);
        let a = run_training(false, &spec, &settings, &data, &scratch("offset-burn"), None).expect("trains");
        let whole_dir = scratch("offset-fused");
        let b = run_training(true, &spec, &settings, &data, &whole_dir, None).expect("trains");
        // A zero offset at the start: the first step's loss is the plain model's.
        assert_eq!(plain.curve[0].loss, b.curve[0].loss);
        assert_ne!(plain.curve, b.curve, "the offset is trained and changes later steps");
        for (x, y) in a.curve.iter().zip(&b.curve) {
            assert!((x.loss - y.loss).abs() < 2e-2 * x.loss.abs().max(1e-3), "{x:?} vs {y:?}");
        }
        let killed_dir = scratch("offset-killed");
        run_training(true, &spec, &settings, &data, &killed_dir, Some(8)).expect("trains");
        let resumed = run_training(true, &spec, &settings, &data, &killed_dir, None).expect("resumes");
        assert_eq!(b.model_bytes, resumed.model_bytes, "model bytes differ after a resume");
        for dir in [whole_dir, killed_dir, scratch("offset-plain"), scratch("offset-burn")] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn with_the_velocity_reading_every_seed_starts_near_the_loss_of_x_t() {
        let (mut spec, settings, data) = setup(Geometry::Geometric, Coupling::Independent);
        spec.output = Output::Velocity;
        let mut rng = ResumableRng::seed_from(4);
        let x0 = data.source.next_batch(4, data.source.loader(&mut rng).as_mut(), &mut rng);
        let x1 = data.target.next_batch(4, data.target.loader(&mut rng).as_mut(), &mut rng);
        let t = vec![0.05, 0.2, 0.4, 0.6];
        let xt = interpolate(spec.geometry, &ProductGeometry::new(&spec.layout), &x0, &x1, &t, 0.0, &mut rng);
        let of_x_t = loss_value(&spec, xt.clone(), x1.clone());
        for seed in 0..12 {
            let start = FusedFlow::new(&spec, seed + settings.seed).loss(xt.clone(), t.clone(), x1.clone());
            assert!(start < 3.0 * of_x_t, "seed {seed}: {start} vs {of_x_t} for x_t itself");
        }
        // The thesis's reading of the same networks: some seeds start far off.
        spec.output = Output::Target;
        let far = (0..12)
            .filter(|seed| FusedFlow::new(&spec, seed + settings.seed).loss(xt.clone(), t.clone(), x1.clone()) > 3.0 * of_x_t)
            .count();
        assert!(far > 0, "no seed starts far off under the target reading");
    }
}
