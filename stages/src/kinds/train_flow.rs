//! `train-flow`: trains a flow-matching model over a weight set (docs/science.md §5, §6).
//!
//! Input: `weights`, a weight set (or a `toy-data` stage, whose Gaussian target is drawn
//! fresh every batch). Output: `flow.mpk` (the model record), `flow.json` (a
//! [`TrainedFlow`](crate::flow::TrainedFlow)) and the `curve` table. Checkpoints go to the scratch folder.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;

use super::{FLOW_FILE, MODEL_FILE};
use crate::backend::{dispatch_engine, BackendTask, EngineTask};
use crate::coupling::Coupling;
use crate::data::toy::GaussianToy;
use crate::data::TrainingSplit;
use crate::flow::estimate::Output;
use crate::flow::source::{prior_set, BatchSource};
use crate::flow::train::{train, BurnFlow, FlowData, FusedFlow, LrSchedule, TrainOutcome, TrainSettings, MAX_LOSS_RATIO};
use crate::flow::{FlowError, FlowSpec, SourceMode, SourceSpec, TrainedFlow};
use crate::geometry::Geometry;
use crate::declare::{KindParams, StageRef};
use crate::kind::{
    ParamSpec, ParamType as T, Params, ProgressSink, Resources, Row, StageContext, StageError, StageKind, TableDecl,
    Value,
};
use crate::kind_params;
use crate::layout::Layout;
use crate::noise::ResumableRng;
use crate::rt::{graph::{Positions, TimeChannel}, model::RtConfig, pairs::Attention};
use crate::subnormal;
use crate::weights::{WeightSet, FILE_NAME};

pub struct TrainFlow;

kind_params! {
    /// The parameters of one `train-flow` instance, declared once (docs/science.md §5, §6).
    struct Args {
        weights: StageRef = required, "the weight set (or toy-data stage) to learn";
        geometry: Geometry = default(Geometry::Euclidean), "euclidean, normalized or geometric flow";
        coupling: Coupling = default(Coupling::Independent), "independent, minibatch-OT, or independent with each target's hidden neurons permuted to its source (rebasin)";
        iterations: usize [T::POSITIVE_INT] = default(250_000), "Adam steps";
        batch_size: usize [T::POSITIVE_INT] = default(32), "pairs per step";
        lr: f64 [T::NON_NEGATIVE_FLOAT] = default(1e-3), "Adam learning rate";
        lr_schedule: String [T::Enum(LrSchedule::NAMES)] = added("constant".to_owned()), "constant (the thesis) or cosine decay to 0 over the run";
        warmup: usize = added(0), "linear warm-up steps of the cosine schedule";
        ema: f64 [T::Float { min: Some(0.0), max: Some(1.0) }] = added(0.0), "decay (below 1) of a moving average of the weights that becomes the model (0: last iterate, the thesis)";
        max_loss_ratio: f64 [T::Float { min: Some(1.0), max: None }] = added(MAX_LOSS_RATIO), "fail as diverged when a step's loss exceeds this multiple of the first step's";
        sigma: f64 [T::Float { min: Some(0.0), max: Some(1.0) }] = default(1e-4), "path noise σ (ignored by the geometric flow)";
        d_model: usize [T::POSITIVE_INT] = default(64), "hidden width d_E (node/edge width d+1)";
        layers: usize [T::POSITIVE_INT] = default(5), "relational-transformer layers";
        heads: usize [T::POSITIVE_INT] = default(1), "attention heads";
        time_channel: TimeChannel = default(TimeChannel::Faithful), "where t is written (faithful: the code's pattern)";
        output: Output = added(Output::Target), "what the network predicts: target x̂1 (the thesis) or velocity, x̂1 = x_t + (1−t)·out";
        attention: Attention = added(Attention::Dense), "node pairs kept: dense, all N² (the thesis), or layer-blocks, consecutive layers and self pairs";
        positions: Positions = added(Positions::Shared), "positional rows: shared, one per hidden layer (the thesis; any hidden width), or per-neuron, one per node (tied to the training widths)";
        readout_offset: bool = added(false), "add a learned offset per weight and bias to the network's output, so the targets' mean is plain parameters (not in the thesis; needs per-neuron positions, which tie a flow to its widths already)";
        source: SourceMode = default(SourceMode::Fixed), "fixed pre-drawn prior set (faithful) or fresh draws";
        source_std: f64 [T::Float { min: Some(f64::MIN_POSITIVE), max: Some(10.0) }] = default(0.1), "prior standard deviation (1 for the toy)";
        n_samples: usize = default(0), "random subset of the weight set (0: all)";
        recompute: bool = added(false), "recompute each RT layer in the backward pass instead of keeping its activations (the burn module, i.e. CUDA): the same gradients, one more forward pass, the memory of one layer";
        checkpoint_every: usize [T::POSITIVE_INT] = default(1000), "iterations between checkpoints";
        curve_every: usize [T::POSITIVE_INT] = default(100), "iterations averaged per training-curve row";
        flush_subnormals: bool = added(false), "treat numbers below f32's normal range as zero while training (x86 FTZ/DAZ): measured on an MNIST d_E 32 flow, steps stay at 1.0 s where they slow to 2.7 s once such numbers appear; results can differ from the default's";
    }
}

impl Args {
    /// The parameters, with the checks that involve more than one of them.
    fn read(params: &Params) -> Result<Self, StageError> {
        let a = Args::parse(params)?;
        if a.d_model % a.heads != 0 {
            return Err(StageError::Param(format!("`d_model` ({}) must be divisible by `heads` ({})", a.d_model, a.heads)));
        }
        if a.readout_offset && a.positions.is_shared() {
            return Err(StageError::Param(
                "`readout_offset = true` needs `positions = \"per-neuron\"`: an offset per weight ties the flow to its training widths, and shared rows leave hidden neurons indistinguishable".to_owned(),
            ));
        }
        if a.ema >= 1.0 {
            return Err(StageError::Param(format!("`ema` must be in [0, 1), got {}", a.ema)));
        }
        a.schedule()?;
        Ok(a)
    }

    fn schedule(&self) -> Result<LrSchedule, StageError> {
        match self.lr_schedule.as_str() {
            "constant" if self.warmup > 0 => Err(StageError::Param(format!(
                "`warmup` ({}) needs `lr_schedule = \"cosine\"`; the constant schedule has none",
                self.warmup
            ))),
            "cosine" => Ok(LrSchedule::Cosine { warmup: self.warmup }),
            _ => Ok(LrSchedule::Constant),
        }
    }

    fn settings(&self, seed: u64) -> Result<TrainSettings, StageError> {
        Ok(TrainSettings {
            iterations: self.iterations,
            batch_size: self.batch_size,
            lr: self.lr,
            schedule: self.schedule()?,
            checkpoint_every: self.checkpoint_every,
            curve_every: self.curve_every,
            seed,
            ema: self.ema,
            max_loss_ratio: self.max_loss_ratio,
        })
    }
}

/// The training targets: a finite weight set or the toy's Gaussian.
struct Targets {
    layout: Layout,
    source: BatchSource,
    count: usize,
    is_aligned: bool,
    trained_on: Option<TrainingSplit>,
}

fn load_targets(ctx: &StageContext<'_>, p: &Args) -> Result<Targets, StageError> {
    let input = ctx.input("weights")?;
    let file = input.file(FILE_NAME);
    if input.kind == "toy-data" && !file.exists() {
        let toy = GaussianToy::target();
        return Ok(Targets {
            layout: toy.layout.clone(),
            source: BatchSource::Gaussian {
                layout: toy.layout,
                mean: toy.mean as f64,
                std: toy.std as f64,
                canonical: p.geometry.is_canonical(),
            },
            count: 0,
            is_aligned: false,
            trained_on: None,
        });
    }
    let mut set = WeightSet::read(&file).map_err(|e| StageError::Input(e.to_string()))?;
    if p.geometry.is_canonical() && !set.is_canonical {
        return Err(StageError::Input(format!(
            "the {} flow trains on canonical weights, but `{}` holds non-canonical weights; canonicalize them first",
            p.geometry.name(),
            input.instance
        )));
    }
    if p.n_samples > 0 && p.n_samples < set.count {
        let mut rng = ResumableRng::derive(ctx.seed, "target-subsample");
        let mut pick = rng.permutation(set.count);
        pick.truncate(p.n_samples);
        set = set.select(&pick).map_err(|e| StageError::Input(e.to_string()))?;
    }
    if set.count < p.batch_size {
        return Err(StageError::Input(format!(
            "the weight set holds {} networks, fewer than one batch of {}",
            set.count, p.batch_size
        )));
    }
    let p_len = set.params();
    Ok(Targets {
        layout: set.layout.clone(),
        count: set.count,
        is_aligned: set.is_aligned,
        trained_on: set.trained_on,
        source: BatchSource::Rows { rows: set.data, p: p_len },
    })
}

/// The source set for a flow: the faithful fixed prior set, or fresh draws.
pub fn source_batches(spec: &FlowSpec, layout: &Layout) -> BatchSource {
    match spec.source.mode {
        SourceMode::Fixed => {
            let mut rng = ResumableRng::derive(spec.source.seed, "source-set");
            let rows = prior_set(layout, spec.source.count, spec.source.std, spec.geometry.is_canonical(), &mut rng);
            BatchSource::Rows { rows, p: layout.num_params() }
        }
        SourceMode::Fresh => BatchSource::Gaussian {
            layout: layout.clone(),
            mean: 0.0,
            std: spec.source.std,
            canonical: spec.geometry.is_canonical(),
        },
    }
}

struct TrainTask<'a> {
    spec: &'a FlowSpec,
    settings: &'a TrainSettings,
    data: &'a FlowData,
    scratch: &'a Path,
    progress: &'a dyn ProgressSink,
    recompute: bool,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<TrainOutcome, FlowError>;
    fn run<B: AutodiffBackend>(self, device: &B::Device) -> Self::Output {
        let mut model = BurnFlow::<B>::new(self.spec, self.settings.seed, device).recomputing(self.recompute);
        train(self.spec, self.settings, self.data, self.scratch, &mut model, self.progress, None)
    }
}

impl EngineTask for TrainTask<'_> {
    /// The same model on the fused CPU engine; `recompute` concerns the burn module only.
    fn run_fused(self) -> Self::Output {
        let mut model = FusedFlow::new(self.spec, self.settings.seed);
        train(self.spec, self.settings, self.data, self.scratch, &mut model, self.progress, None)
    }
}

impl StageKind for TrainFlow {
    fn name(&self) -> &'static str {
        "train-flow"
    }
    /// `flow.safetensors`: the model's parameters by name, `flow.json` as metadata.
    fn exports(&self, out_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, StageError> {
        let read = |name: &str| std::fs::read(out_dir.join(name)).map_err(|e| StageError::io(format!("reading {name}"), e));
        let config = String::from_utf8_lossy(&read(FLOW_FILE)?).into_owned();
        let bytes = crate::flow::export::flow_safetensors(&config, &read(MODEL_FILE)?).map_err(StageError::Input)?;
        Ok(vec![(crate::flow::export::FILE_NAME.to_owned(), bytes)])
    }

    fn version(&self) -> u32 {
        // 2: CPU training on the fused engine (exact GELU derivative).
        // 3: emits the `loss_by_time` table.
        3
    }

    fn about(&self) -> &'static str {
        "Train a flow-matching relational transformer over a weight set"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces {
            flow: true,
            ..crate::kind::Produces::tables(&[
                TableDecl::new("curve", &["iteration", "loss"]),
                TableDecl::new("loss_by_time", &["t", "loss", "mean_predictor_loss"]),
            ])
        })
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Weights
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        Args::read(params).map(|_| ())
    }

    fn resources(&self, _params: &Params) -> Resources {
        Resources { cpus: 2, gpus: 0, mem_mb: 4096, time_min: 0 }
    }

    /// Training ≈ 3 × forward per pair and iteration (docs/science.md §11.2).
    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let a = Args::read(params).ok()?;
        let forward = crate::rt::forward_flops(&super::estimate_layout(params), a.attention, a.d_model, a.layers);
        Some(3.0 * forward * a.batch_size as f64 * a.iterations as f64)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p = Args::read(ctx.params)?;
        let settings = p.settings(ctx.seed)?;
        let targets = load_targets(ctx, &p)?;
        let layout = targets.layout.clone();
        let source_count = match p.source {
            SourceMode::Fixed => targets.count.max(p.batch_size),
            SourceMode::Fresh => 0,
        };
        let spec = FlowSpec {
            geometry: p.geometry,
            coupling: p.coupling,
            layout: layout.clone(),
            rt: RtConfig::for_layout(&layout, p.d_model, p.layers, p.heads).with_positions(&layout, p.positions).with_offset(&layout, p.readout_offset),
            time_channel: p.time_channel,
            sigma: p.sigma,
            source: SourceSpec { mode: p.source, std: p.source_std, count: source_count, seed: ctx.seed },
            output: p.output,
            attention: p.attention,
            positions: p.positions,
        };
        let data = FlowData { source: source_batches(&spec, &layout), target: targets.source };
        let task = TrainTask {
            spec: &spec,
            settings: &settings,
            data: &data,
            scratch: ctx.scratch_dir,
            progress: ctx.progress,
            recompute: p.recompute,
        };
        let outcome = subnormal::flushing(p.flush_subnormals, || dispatch_engine(ctx.backend, task))?
            .map_err(|e| StageError::Failed(e.to_string()))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = ctx.out_dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| StageError::io(format!("writing {}", path.display()), e))
        };
        write(MODEL_FILE, &outcome.model_bytes)?;
        let trained = TrainedFlow { spec, settings, target_aligned: targets.is_aligned, targets_trained_on: targets.trained_on };
        let json = serde_json::to_vec_pretty(&trained).map_err(|e| StageError::Failed(e.to_string()))?;
        write(FLOW_FILE, &json)?;
        let rows: Vec<Row> = outcome
            .curve
            .iter()
            .map(|point| {
                Row::from([
                    ("iteration".to_owned(), Value::Int(point.iteration as i64)),
                    ("loss".to_owned(), Value::Float(point.loss)),
                ])
            })
            .collect();
        ctx.emit_rows("curve", rows);
        let rows: Vec<Row> = outcome
            .loss_by_time
            .iter()
            .map(|point| {
                Row::from([
                    ("t".to_owned(), Value::Float(point.t)),
                    ("loss".to_owned(), Value::Float(point.loss)),
                    ("mean_predictor_loss".to_owned(), Value::Float(point.mean_predictor_loss)),
                ])
            })
            .collect();
        ctx.emit_rows("loss_by_time", rows);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::test_support::{params, run};

    #[test]
    fn flop_estimates_match_the_spec_table() {
        // docs/science.md §11.2: toy d=32 B=16 20K iterations ≈ 0.46 PF; UCI d=64 B=32 250K ≈ 43 PF;
        // MNIST d=8 B=8 100K ≈ 14.5 PF (the dataset comes from an upstream stage's params).
        let cases: [(&[(&str, Value)], f64); 3] = [
            (
                &[("d_model", Value::Int(32)), ("batch_size", Value::Int(16)), ("iterations", Value::Int(20_000))],
                0.46e15,
            ),
            (&[], 43e15),
            (
                &[
                    ("d_model", Value::Int(8)),
                    ("batch_size", Value::Int(8)),
                    ("iterations", Value::Int(100_000)),
                    ("dataset", Value::Str("mnist".to_owned())),
                ],
                14.5e15,
            ),
        ];
        for (overrides, want) in cases {
            let mut with_targets = overrides.to_vec();
            with_targets.push(("weights", Value::Str("targets".into())));
            let got = TrainFlow.estimate_flops(&params(&TrainFlow, &with_targets)).expect("an estimate");
            assert!((got / want - 1.0).abs() < 0.05, "{overrides:?}: {got:e} vs {want:e}");
        }
    }

    #[test]
    fn sphere_geometries_refuse_non_canonical_weights_before_training() {
        let dir = std::env::temp_dir().join(format!("wfpipe-train-kind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout(vec![3, 2, 2]);
        let set = WeightSet::new(layout.clone(), vec![0.5; 8 * layout.num_params()]).expect("a weight set");
        std::fs::create_dir_all(dir.join("raw")).expect("folder");
        set.write(&dir.join("raw").join(FILE_NAME)).expect("written");
        for geometry in ["normalized", "geometric"] {
            let p = params(
                &TrainFlow,
                &[
                    ("weights", Value::Str("raw".into())),
                    ("geometry", Value::Str(geometry.into())),
                    ("d_model", Value::Int(4)),
                ],
            );
            let (result, _, _) = run(&TrainFlow, &p, "weights", "collect", &dir.join("raw"), &dir.join(geometry));
            assert!(matches!(result, Err(StageError::Input(ref m)) if m.contains("non-canonical")), "{result:?}");
            assert!(!dir.join(geometry).join("scratch").join("state.json").exists());
        }
        let bad = params(
            &TrainFlow,
            &[("weights", Value::Str("raw".into())), ("d_model", Value::Int(6)), ("heads", Value::Int(4))],
        );
        assert!(TrainFlow.validate(&bad).is_err());
        for (decay, ok) in [(0.0, true), (0.999, true), (1.0, false), (-0.1, false)] {
            let p = params(&TrainFlow, &[("weights", Value::Str("raw".into())), ("ema", Value::Float(decay))]);
            assert_eq!(TrainFlow.validate(&p).is_ok(), ok, "ema = {decay}");
        }
        for (positions, ok) in [("shared", false), ("per-neuron", true)] {
            let p = params(
                &TrainFlow,
                &[
                    ("weights", Value::Str("raw".into())),
                    ("readout_offset", Value::Bool(true)),
                    ("positions", Value::Str(positions.into())),
                ],
            );
            let result = TrainFlow.validate(&p);
            assert_eq!(result.is_ok(), ok, "{positions}: {result:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
