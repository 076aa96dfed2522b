//! `sample`: maps prior draws through a trained flow with the Euler sampler (docs/science.md §7)
//! and writes the samples as a weight set, `weights.safetensors`.

use burn::module::Module;
use burn::record::Recorder;
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::train_flow::source_batches;
use crate::flow::TrainedFlow;
use super::{FLOW_FILE, MODEL_FILE};
use crate::backend::{dispatch_engine, BackendTask, EngineTask};
use crate::data::{self, DatasetName, TrainingSplit};
use crate::flow::source::BatchSource;
use crate::flow::train::ModelRecorder;
use crate::flow::SourceMode;
use crate::flow::estimate::Estimator;
use crate::geometry::product::ProductGeometry;
use crate::guidance::{mismatch, TaskGuidance};
use crate::declare::{KindParams, StageRef};
use crate::kind::{ParamSpec, ParamType as T, Params, StageContext, StageError, StageKind};
use crate::kind_params;
use crate::layout::Layout;
use crate::noise::ResumableRng;
use crate::rt::fused::{FusedGraph, FusedRt};
use crate::rows::{column_tensor, host_rows, rows_tensor};
use crate::rt::{graph::GraphSpec, model::RelationalTransformer, pairs::Attention};
use crate::sample::{Guidance, Predictor, Sampler, VelocityRule};
use crate::weights::{WeightSet, FILE_NAME};

pub struct Sample;

kind_params! {
    /// The parameters of one `sample` instance, declared once (docs/science.md §7).
    struct Args {
        flow: StageRef = required, "the train-flow stage to sample";
        count: usize [T::POSITIVE_INT] = default(256), "number of networks";
        batch_size: usize [T::POSITIVE_INT] = default(32), "networks mapped at once";
        steps: usize [T::Int { min: Some(2), max: None }] = default(64), "Euler grid points n (n−1 updates)";
        velocity_rule: VelocityRule = default(VelocityRule::X1MinusX0), "x1-minus-x0 (faithful) or denoiser";
        noise_scale: f64 [T::NON_NEGATIVE_FLOAT] = default(0.0), "ε: noise std added per step for t > 0.8";
        guidance_scale: f64 [T::NON_NEGATIVE_FLOAT] = default(0.0), "λ: weight of the task-gradient guidance";
        guidance_task: Option<DatasetName> = default(None), "dataset whose training loss guides sampling";
        guidance_batch: usize [T::POSITIVE_INT] = default(64), "training rows per guidance gradient";
        guidance_layout_bug: bool = default(false), "reproduce the code's transposed guidance gradient";
        layout: Vec<usize> = default(Vec::new()), "layout to sample (empty: the flow's; hidden widths may differ)";
        reproject: bool = default(false), "project sphere points after each step (ablation)";
    }
}

impl Args {
    /// The parameters, with the checks that involve more than one of them.
    fn read(params: &Params) -> Result<Self, StageError> {
        let a = Args::parse(params)?;
        if a.guidance_scale > 0.0 && a.guidance_task.is_none() {
            return Err(StageError::Param("`guidance_scale` > 0 needs a `guidance_task`".to_owned()));
        }
        a.layout()?;
        Ok(a)
    }

    /// The layout asked for, if any.
    fn layout(&self) -> Result<Option<Layout>, StageError> {
        if self.layout.is_empty() {
            return Ok(None);
        }
        Layout::new(self.layout.clone()).map(Some).map_err(StageError::Param)
    }
}

/// The task whose train split guides sampling: for the flow targets' own task the split
/// they were trained on (recorded with them, so guidance never sees the rows their
/// evaluation tests on), for another task its usual split.
fn guidance_dataset(targets: Option<TrainingSplit>, task: DatasetName, data_dir: &std::path::Path) -> Result<data::Dataset, StageError> {
    data::load(task, data_dir, TrainingSplit::seed_for(targets, task)).map_err(|e| StageError::Input(e.to_string()))
}

/// The flow's network as a [`Predictor`]: `x̂1` from its output at `(x, t)`.
struct FlowPredictor<'a, B: Backend> {
    model: &'a RelationalTransformer<B>,
    graph: GraphSpec,
    estimator: Estimator,
    device: &'a B::Device,
}

impl<B: Backend> Predictor for FlowPredictor<'_, B> {
    fn predict(&mut self, x: &[f32], t: f32) -> Vec<f32> {
        let p = self.graph.layout.num_params();
        let batch = x.len() / p;
        let xt = rows_tensor::<B>(x, p, self.device);
        let tt = column_tensor::<B>(&vec![t; batch], self.device);
        let out = self.model.forward(xt.clone(), tt.clone(), &self.graph);
        host_rows(self.estimator.apply(out, xt, tt))
    }
}

/// The same predictor on the fused CPU engine.
struct FusedPredictor {
    engine: FusedRt,
    graph: FusedGraph,
    estimator: Estimator,
}

impl Predictor for FusedPredictor {
    fn predict(&mut self, x: &[f32], t: f32) -> Vec<f32> {
        let times = vec![t; x.len() / self.estimator.layout.num_params()];
        let out = self.engine.predict(&self.graph, x, &times);
        self.estimator.apply_rows(out, x, &times)
    }
}

struct SampleTask<'a> {
    flow: &'a TrainedFlow,
    model_bytes: Vec<u8>,
    layout: &'a Layout,
    x0: &'a [f32],
    sampler: &'a Sampler,
    batch_size: usize,
    guidance: Option<TaskGuidance<'a>>,
    rng: &'a mut ResumableRng,
    progress: &'a dyn crate::kind::ProgressSink,
}

impl EngineTask for SampleTask<'_> {
    /// Samples on the fused CPU engine.
    fn run_fused(self) -> Result<Vec<f32>, StageError> {
        type Cpu = burn::backend::NdArray<f32>;
        let model = load_model::<Cpu>(self.flow, &self.model_bytes, &Default::default())?;
        let mut predictor = FusedPredictor {
            engine: FusedRt::from_model(&model, &self.flow.spec.rt),
            graph: FusedGraph::new(&self.flow.spec.graph(self.layout)),
            estimator: self.flow.spec.estimator(self.layout),
        };
        self.sample_with(&mut predictor)
    }
}

impl SampleTask<'_> {
    fn sample_with(mut self, predictor: &mut dyn Predictor) -> Result<Vec<f32>, StageError> {
        let p = self.layout.num_params();
        let total = self.x0.len() / p;
        let mut out = Vec::with_capacity(self.x0.len());
        for chunk in self.x0.chunks(self.batch_size * p) {
            let guidance = self.guidance.as_mut().map(|g| g as &mut dyn Guidance);
            let (samples, _) = self.sampler.run(chunk, predictor, guidance, self.rng);
            out.extend(samples);
            self.progress.progress((out.len() / p) as u64, total as u64, "samples");
        }
        Ok(out)
    }
}

fn load_model<B: Backend>(flow: &TrainedFlow, bytes: &[u8], device: &B::Device) -> Result<RelationalTransformer<B>, StageError> {
    let record = ModelRecorder::default()
        .load(bytes.to_vec(), device)
        .map_err(|e| StageError::Input(format!("reading the flow model: {e}")))?;
    Ok(flow.spec.rt.init::<B>(0, device).load_record(record))
}

impl BackendTask for SampleTask<'_> {
    type Output = Result<Vec<f32>, StageError>;
    fn run<A: AutodiffBackend>(self, device: &A::Device) -> Self::Output {
        type Inner<A> = <A as AutodiffBackend>::InnerBackend;
        let model = load_model::<Inner<A>>(self.flow, &self.model_bytes, device)?;
        let mut predictor = FlowPredictor::<Inner<A>> {
            model: &model,
            graph: self.flow.spec.graph(self.layout),
            estimator: self.flow.spec.estimator(self.layout),
            device,
        };
        self.sample_with(&mut predictor)
    }
}

fn read_flow(ctx: &StageContext<'_>) -> Result<(TrainedFlow, Vec<u8>), StageError> {
    let input = ctx.input("flow")?;
    let read = |name: &str| {
        let path = input.file(name);
        std::fs::read(&path).map_err(|e| StageError::io(format!("reading {}", path.display()), e))
    };
    let flow: TrainedFlow = serde_json::from_slice(&read(FLOW_FILE)?)
        .map_err(|e| StageError::Input(format!("{}: {e}", input.file(FLOW_FILE).display())))?;
    Ok((flow, read(MODEL_FILE)?))
}

/// `count` starting points: rows of the flow's fixed source set (same layout) or fresh
/// prior draws (fresh-source flows, or another layout).
fn starting_points(flow: &TrainedFlow, layout: &Layout, count: usize, rng: &mut ResumableRng) -> Vec<f32> {
    let mut spec = flow.spec.clone();
    if *layout != spec.layout {
        spec.source.mode = SourceMode::Fresh;
    }
    let source = source_batches(&spec, layout);
    match &source {
        BatchSource::Rows { rows, p } => {
            let n = rows.len() / p;
            let order = rng.permutation(n);
            (0..count).flat_map(|k| rows[order[k % n] * p..(order[k % n] + 1) * p].iter().copied()).collect()
        }
        BatchSource::Gaussian { .. } => source.next_batch(count, None, rng),
    }
}

impl StageKind for Sample {
    fn name(&self) -> &'static str {
        "sample"
    }

    fn version(&self) -> u32 {
        // 2: CPU sampling on the fused engine.
        2
    }

    fn about(&self) -> &'static str {
        "Sample networks from a trained flow with the Euler sampler"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::weights())
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Flow
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        Args::read(params).map(|_| ())
    }

    /// One forward pass per sample and Euler update (docs/science.md §11.2); the network size
    /// comes from the upstream `train-flow` parameters the planner passes along.
    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let p = Args::read(params).ok()?;
        let (d, layers) = (params.usize("d_model").ok()?, params.usize("layers").ok()?);
        let attention = params.str("attention").ok().and_then(Attention::parse).unwrap_or_default();
        let forward = crate::rt::forward_flops(&super::estimate_layout(params), attention, d, layers);
        Some(forward * p.count as f64 * (p.steps - 1) as f64)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p = Args::read(ctx.params)?;
        let (flow, model_bytes) = read_flow(ctx)?;
        let layout = p.layout()?.unwrap_or_else(|| flow.spec.layout.clone());
        let trained = &flow.spec.layout;
        if layout.inputs() != trained.inputs() || layout.num_layers() != trained.num_layers() || layout.outputs() != trained.outputs() {
            return Err(StageError::Param(format!(
                "layout {layout} is incompatible with the flow's layout {trained}: only hidden widths may differ"
            )));
        }
        if let Some(why) = flow.spec.incompatibility(&layout) {
            return Err(StageError::Param(why));
        }
        let dataset = match p.guidance_task {
            Some(name) if p.guidance_scale > 0.0 => {
                if let Some(why) = mismatch(&layout, name.inputs(), name.classes()) {
                    return Err(StageError::Param(why));
                }
                Some(guidance_dataset(flow.targets_trained_on, name, ctx.data_dir)?)
            }
            _ => None,
        };
        let guidance = dataset.as_ref().map(|d| TaskGuidance::new(layout.clone(), &d.train, p.guidance_batch, p.guidance_layout_bug));
        let mut rng = ResumableRng::derive(ctx.seed, "sampling");
        let x0 = starting_points(&flow, &layout, p.count, &mut rng);
        let sampler = Sampler {
            geometry: flow.spec.geometry,
            product: ProductGeometry::new(&layout),
            steps: p.steps,
            rule: p.velocity_rule,
            noise_scale: p.noise_scale,
            guidance_scale: p.guidance_scale,
            reproject: p.reproject,
        };
        let task = SampleTask {
            flow: &flow,
            model_bytes,
            layout: &layout,
            x0: &x0,
            sampler: &sampler,
            batch_size: p.batch_size,
            guidance,
            rng: &mut rng,
            progress: ctx.progress,
        };
        let samples = dispatch_engine(ctx.backend, task)??;
        let mut set = WeightSet::new(layout, samples).map_err(|e| StageError::Failed(format!("sampled weights: {e}")))?;
        set.is_aligned = flow.target_aligned;
        set.trained_on = flow.targets_trained_on;
        set.write(&ctx.out_dir.join(FILE_NAME)).map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::estimate::Output;
    use crate::kind::Value;
    use crate::kinds::test_support::{params, run};

    #[test]
    fn guidance_minibatches_never_hold_a_row_the_evaluation_tests_on() {
        use crate::data::uci::{split_order, TRAIN, VAL};
        use std::collections::BTreeSet;
        let uci = DatasetName::UciWdbc;
        for seed in [0u64, 7, 42] {
            // Networks collected under `seed`; evaluate accepts only that seed's test split.
            let recorded = TrainingSplit { dataset: uci, split_seed: seed };
            assert!(recorded.keeps_unseen(uci, seed) && !recorded.keeps_unseen(uci, seed + 1));
            let test: BTreeSet<usize> = split_order(seed)[TRAIN + VAL..].iter().copied().collect();
            let data = guidance_dataset(Some(recorded), uci, std::path::Path::new("unused")).unwrap();
            let rows = split_order(TrainingSplit::seed_for(Some(recorded), uci));
            let guide = TaskGuidance::new(Layout(vec![30, 4, 2]), &data.train, 64, false);
            let mut rng = crate::noise::ResumableRng::seed_from(seed);
            for _ in 0..200 {
                for i in guide.minibatch(&mut rng) {
                    assert!(!test.contains(&rows[i]), "seed {seed}: table row {} is a test row", rows[i]);
                }
            }
        }
        // What matching seeds by hand gave: guidance's split 0 against evaluation's 42.
        let old_guidance: BTreeSet<usize> = split_order(0)[..TRAIN].iter().copied().collect();
        assert!(split_order(42)[TRAIN + VAL..].iter().any(|r| old_guidance.contains(r)));
        // MNIST trains on its official training file whatever the seed.
        assert!(TrainingSplit { dataset: DatasetName::Mnist, split_seed: 0 }.keeps_unseen(DatasetName::Mnist, 42));
    }

    #[test]
    fn flop_estimate_uses_the_upstream_flow_size() {
        // docs/science.md §11.2: MNIST d=32, 128 samples × 64 steps ≈ 0.6 PF.
        let mut view = params(&Sample, &[("flow", Value::Str("flow".into())), ("count", Value::Int(128)), ("steps", Value::Int(64))]);
        assert_eq!(Sample.estimate_flops(&view), None, "no flow size known");
        view.0.insert("d_model".into(), Value::Int(32));
        view.0.insert("layers".into(), Value::Int(5));
        view.0.insert("dataset".into(), Value::Str("mnist".into()));
        let got = Sample.estimate_flops(&view).expect("an estimate");
        assert!((got / 0.6e15 - 1.0).abs() < 0.05, "{got:e}");
    }

    fn toy_flow(dir: &std::path::Path, extra: &[(&str, Value)]) -> std::path::PathBuf {
        let kind = crate::kinds::train_flow::TrainFlow;
        let mut overrides = vec![
                ("weights", Value::Str("toy".into())),
                ("iterations", Value::Int(3)),
                ("batch_size", Value::Int(2)),
                ("d_model", Value::Int(4)),
                ("layers", Value::Int(1)),
                ("source", Value::Str("fresh".into())),
                ("source_std", Value::Float(1.0)),
        ];
        overrides.extend(extra.iter().cloned());
        let p = params(&kind, &overrides);
        let (result, out, tables) = run(&kind, &p, "weights", "toy-data", &dir.join("toy"), &dir.join("flow"));
        result.expect("toy flow trains");
        assert_eq!(tables["curve"].len(), 1);
        out
    }

    #[test]
    fn the_toy_runs_end_to_end_through_the_kinds() {
        let dir = std::env::temp_dir().join(format!("wfpipe-sample-kind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let flow = toy_flow(&dir, &[]);
        let p = params(&Sample, &[("flow", Value::Str("toy-flow".into())), ("count", Value::Int(3)), ("steps", Value::Int(3))]);
        let (result, out, _) = run(&Sample, &p, "flow", "train-flow", &flow, &dir.join("samples"));
        result.expect("sampling runs");
        let set = WeightSet::read(&out.join(FILE_NAME)).expect("a weight set");
        assert_eq!((set.count, set.layout.clone()), (3, Layout(vec![30, 16, 16, 2])));

        // Another hidden width works; another input size is refused before any compute.
        let wide = params(&Sample, &[("flow", Value::Str("f".into())), ("count", Value::Int(2)), ("steps", Value::Int(2)), ("layout", Value::List(vec![Value::Int(30), Value::Int(8), Value::Int(24), Value::Int(2)]))]);
        let (result, out, _) = run(&Sample, &wide, "flow", "train-flow", &flow, &dir.join("wide"));
        result.expect("a wider layout samples");
        assert_eq!(WeightSet::read(&out.join(FILE_NAME)).expect("weights").params(), 30 * 8 + 8 * 24 + 24 * 2 + 34);
        let bad = params(&Sample, &[("flow", Value::Str("f".into())), ("layout", Value::List(vec![Value::Int(31), Value::Int(16), Value::Int(16), Value::Int(2)]))]);
        let (result, _, _) = run(&Sample, &bad, "flow", "train-flow", &flow, &dir.join("bad"));
        assert!(matches!(result, Err(StageError::Param(ref m)) if m.contains("incompatible")), "{result:?}");

        // A guidance task whose input size differs from the layout is refused.
        let guided = params(&Sample, &[("flow", Value::Str("f".into())), ("guidance_scale", Value::Float(0.1)), ("guidance_task", Value::Str("mnist".into()))]);
        let (result, _, _) = run(&Sample, &guided, "flow", "train-flow", &flow, &dir.join("guided"));
        assert!(matches!(result, Err(StageError::Param(ref m)) if m.contains("784 inputs")), "{result:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flow_json_names_the_velocity_reading_and_old_files_read_as_target() {
        let dir = std::env::temp_dir().join(format!("wfpipe-sample-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let read = |flow: &std::path::Path| -> (String, TrainedFlow) {
            let text = std::fs::read_to_string(flow.join(FLOW_FILE)).expect("flow.json");
            let parsed = serde_json::from_str(&text).expect("a trained flow");
            (text, parsed)
        };
        let (text, plain) = read(&toy_flow(&dir.join("target"), &[]));
        assert!(!text.contains("\"output\""), "the thesis's reading leaves flow.json as it was: {text}");
        assert_eq!(plain.spec.output, Output::Target);
        let velocity = toy_flow(&dir.join("velocity"), &[("output", Value::Str("velocity".into()))]);
        let (text, trained) = read(&velocity);
        assert!(text.contains("\"output\": \"velocity\""), "{text}");
        assert_eq!(trained.spec.output, Output::Velocity);
        let p = params(&Sample, &[("flow", Value::Str("f".into())), ("count", Value::Int(2)), ("steps", Value::Int(2))]);
        let (result, out, _) = run(&Sample, &p, "flow", "train-flow", &velocity, &dir.join("samples"));
        result.expect("a velocity flow samples");
        assert!(WeightSet::read(&out.join(FILE_NAME)).expect("weights").data.iter().all(|v| v.is_finite()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_layer_block_flow_samples_with_its_own_pair_set_on_any_hidden_width() {
        let dir = std::env::temp_dir().join(format!("wfpipe-sample-blocks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dense_text = std::fs::read_to_string(toy_flow(&dir.join("dense"), &[]).join(FLOW_FILE)).expect("flow.json");
        assert!(!dense_text.contains("\"attention\""), "a dense flow's flow.json is as it was: {dense_text}");
        let flow = toy_flow(&dir.join("blocks"), &[("attention", Value::Str("layer-blocks".into()))]);
        let text = std::fs::read_to_string(flow.join(FLOW_FILE)).expect("flow.json");
        assert!(text.contains("\"attention\": \"layer-blocks\""), "{text}");
        let sample = |flow: &std::path::Path, name: &str, extra: &[(&str, Value)]| {
            let mut overrides = vec![("flow", Value::Str("f".into())), ("count", Value::Int(3)), ("steps", Value::Int(3))];
            overrides.extend(extra.iter().cloned());
            let (result, out, _) = run(&Sample, &params(&Sample, &overrides), "flow", "train-flow", flow, &dir.join(name));
            result.map(|()| WeightSet::read(&out.join(FILE_NAME)).expect("a weight set"))
        };
        let sparse = sample(&flow, "sparse", &[]).expect("a layer-block flow samples");
        assert!(sparse.data.iter().all(|v| v.is_finite()));
        // `sample` reads the pair set from the flow: the same model read as dense differs.
        let as_dense = dir.join("as-dense");
        std::fs::create_dir_all(&as_dense).expect("folder");
        std::fs::copy(flow.join(MODEL_FILE), as_dense.join(MODEL_FILE)).expect("model copied");
        std::fs::write(as_dense.join(FLOW_FILE), text.replace("\"attention\": \"layer-blocks\"", "\"attention\": \"dense\"")).expect("flow.json");
        let dense = sample(&as_dense, "dense-samples", &[]).expect("samples");
        assert_ne!(sparse.data, dense.data, "the pair set must reach the sampler");
        // Architecture transfer: another hidden width samples; another input size is
        // refused before any compute.
        let wide = sample(&flow, "wide", &[("layout", Value::List([30, 8, 24, 2].map(Value::Int).to_vec()))]).expect("wider");
        assert_eq!(wide.params(), 30 * 8 + 8 * 24 + 24 * 2 + 34);
        let bad = sample(&flow, "bad", &[("layout", Value::List([31, 16, 16, 2].map(Value::Int).to_vec()))]);
        assert!(matches!(bad, Err(StageError::Param(ref m)) if m.contains("incompatible")), "{:?}", bad.err());
        assert!(!dir.join("bad").join("out").join(FILE_NAME).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
