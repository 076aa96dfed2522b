//! `finetune`: learning curves from a learned initialization (docs/science.md 8.4c, Fig. 7.6).
//!
//! Each of `runs` networks starts from a random network of a weight set (`init = "weights"`,
//! e.g. unguided samples of the Euclidean MNIST flow) or from the base prior, N(0, 0.1²)
//! weights and zero biases (`init = "prior"`), and trains on the dataset's training split
//! for `iterations` optimizer steps. Before the first step and every `record_every` steps
//! it is measured on the first `eval_rows` rows of the evaluation split (the code's first 8
//! batches of 64 test images), with the loss averaging of 1.3.
//!
//! Run `r` takes its shuffles from the same seeded stream whatever the init, so two stages
//! that differ only in `init` see the same minibatches.
//!
//! Table `curve`: `run`, `iteration`, `accuracy`, `loss`, `init`, and `network` (the index
//! in the input set, weights init only).

use std::sync::atomic::{AtomicU64, Ordering};

use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::{check_layout_fits, layout_of, row, thread_pool, OptimizerArgs};
use crate::data::{self, DatasetName, Split, SplitName};
use crate::eval::finetune::{finetune, CurvePoint, FinetuneConfig};
use crate::declare::{KindParams, StageRef};
use crate::kind::{ParamSpec, ParamType as T, Params, Resources, Row, StageContext, StageError, StageKind, TableDecl, Value};
use crate::kind_params;
use crate::layout::Layout;
use crate::mlp::MlpConfig;
use crate::rng;
use crate::weights::{WeightSet, FILE_NAME};

pub struct Finetune;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    Weights,
    Prior,
}

crate::words!(Init, "init", { Weights = "weights", Prior = "prior" });

kind_params! {
    /// The parameters of one `finetune` instance, declared once (docs/science.md 8.4c).
    struct Args {
        init: Init = default(Init::Weights), "weights: random networks of `weights`; prior: N(0, 0.1²) weights, zero biases";
        weights: StageRef = default(StageRef::NONE), "stage whose networks start the runs (init = \"weights\")";
        dataset: DatasetName = required, "task trained and measured on";
        layout: Vec<usize> = default(Vec::new()), "MLP layout (empty: the weight set's)";
        runs: usize [T::POSITIVE_INT] = default(5), "independent runs";
        iterations: usize [T::POSITIVE_INT] = default(1876), "optimizer steps per run (1,876 = 2 MNIST epochs at batch 64)";
        record_every: usize [T::POSITIVE_INT] = default(5), "measure every this many steps";
        eval_rows: usize = default(512), "first rows of the split measured on (0: all; 512 = the code's 8 batches)";
        split: SplitName = default(SplitName::Test), "split measured on";
        split_seed: u64 = default(data::DEFAULT_SPLIT_SEED), "seed of the train/val/test split";
        eval_batch: usize [T::POSITIVE_INT] = default(crate::mlp::EVAL_BATCH), "batch size of the per-batch loss averaging";
        batch_size: usize [T::POSITIVE_INT] = default(64), "training minibatch size";
        ..optimizer: OptimizerArgs;
    }
}

/// The parameters, checked together, and what follows from them.
struct FinetuneParams {
    args: Args,
    layout: Option<Layout>,
    config: FinetuneConfig,
}

impl FinetuneParams {
    fn parse(params: &Params) -> Result<Self, StageError> {
        let args = Args::parse(params)?;
        let layout = if args.layout.is_empty() { None } else { Some(layout_of(&args.layout)?) };
        match (args.init, args.weights.is_set(), &layout) {
            (Init::Weights, false, _) => return Err(StageError::Param("init = \"weights\" needs `weights`: the stage whose networks start the runs".into())),
            (Init::Prior, false, None) => {
                return Err(StageError::Param("init = \"prior\" needs a `layout` (or `weights`, whose layout is then used)".into()))
            }
            _ => {}
        }
        if let Some(layout) = &layout {
            check_layout_fits(layout, args.dataset)?;
        }
        let config = FinetuneConfig {
            iterations: args.iterations,
            record_every: args.record_every,
            batch_size: args.batch_size,
            optimizer: args.optimizer.config()?,
            eval_batch: args.eval_batch,
        };
        Ok(FinetuneParams { args, layout, config })
    }
}

/// The input weight set, if `weights` is set, with a clear message when it wrote none.
fn read_weights(ctx: &StageContext<'_>) -> Result<Option<WeightSet>, StageError> {
    let Some(input) = ctx.optional_input("weights")? else { return Ok(None) };
    let path = input.require_file("weights", FILE_NAME, Some("finetune starts from weight sets (collect, align, canonicalize, sample)"))?;
    Ok(Some(WeightSet::read(&path)?))
}

/// The first `rows` rows of a split (all of it for 0).
fn first_rows(split: &Split, rows: usize) -> Split {
    let n = if rows == 0 { split.len() } else { rows.min(split.len()) };
    Split { features: split.features, x: split.x[..n * split.features].to_vec(), y: split.y[..n].to_vec() }
}

fn curve_rows(run: usize, init: Init, network: Option<usize>, curve: &[CurvePoint]) -> Vec<Row> {
    curve
        .iter()
        .map(|p| {
            let mut r = row([
                ("run", Value::Int(run as i64)),
                ("iteration", Value::Int(p.iteration as i64)),
                ("accuracy", Value::Float(p.accuracy)),
                ("loss", Value::Float(p.loss)),
                ("init", Value::Str(init.name().into())),
            ]);
            if let Some(n) = network {
                r.insert("network".into(), Value::Int(n as i64));
            }
            r
        })
        .collect()
}

impl StageKind for Finetune {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Training curves (test loss and accuracy) from networks of a weight set or from the N(0, 0.1²) prior"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::tables(&[TableDecl::new("curve", &["run", "iteration", "accuracy", "loss", "init", "network"])]))
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Weights
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        FinetuneParams::parse(params).map(|_| ())
    }

    fn resources(&self, params: &Params) -> Resources {
        let p = FinetuneParams::parse(params);
        let cpus = p.as_ref().map(|p| p.args.runs.clamp(1, 8) as u32).unwrap_or(1);
        let mem_mb = match p.map(|p| p.args.dataset) {
            Ok(DatasetName::Mnist | DatasetName::FashionMnist) => 2048,
            _ => Resources::default().mem_mb,
        };
        Resources { cpus, mem_mb, ..Resources::default() }
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let p = FinetuneParams::parse(params).ok()?;
        let weights = match &p.layout {
            Some(layout) => layout.num_weights(),
            None => p.args.dataset.inputs() * 10 + 10 * p.args.dataset.classes(),
        } as f64;
        let c = &p.config;
        // Forward + backward ≈ 6 FLOPs per weight per row; each measurement a forward pass.
        let eval_rows = if p.args.eval_rows == 0 { 5_000 } else { p.args.eval_rows } as f64;
        let per_run = 6.0 * weights * (c.iterations * c.batch_size) as f64 + 2.0 * weights * eval_rows * (c.iterations / c.record_every + 2) as f64;
        Some(p.args.runs as f64 * per_run)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p = FinetuneParams::parse(ctx.params)?;
        let set = read_weights(ctx)?;
        let layout = match (&p.layout, &set) {
            (Some(layout), Some(set)) if p.args.init == Init::Weights => {
                set.expect_layout(layout)?;
                layout.clone()
            }
            (Some(layout), _) => layout.clone(),
            (None, Some(set)) => set.layout.clone(),
            (None, None) => return Err(StageError::Param("no layout: set `layout` or `weights`".into())),
        };
        // Every input check happens before the dataset is loaded or anything trains.
        check_layout_fits(&layout, p.args.dataset)?;
        if let (Init::Weights, Some(set)) = (p.args.init, &set) {
            data::TrainingSplit::refuse_seen(set.trained_on, p.args.dataset, p.args.split, p.args.split_seed).map_err(StageError::Param)?;
        }
        let starts: Vec<(Option<usize>, Vec<f32>)> = match (p.args.init, &set) {
            (Init::Weights, Some(set)) => {
                let mut order: Vec<usize> = (0..set.count).collect();
                order.shuffle(&mut rng::stream(ctx.seed, "finetune networks", 0));
                (0..p.args.runs).map(|r| order[r % set.count]).map(|i| (Some(i), set.row(i).to_vec())).collect()
            }
            (Init::Weights, None) => return Err(StageError::Input("init = \"weights\" but no `weights` input".into())),
            (Init::Prior, _) => {
                let mlp = MlpConfig::new(layout.clone());
                (0..p.args.runs).map(|r| (None, mlp.init(&mut rng::stream(ctx.seed, "finetune prior", r as u64)))).collect()
            }
        };
        let dataset = data::load(p.args.dataset, ctx.data_dir, p.args.split_seed)?;
        let eval = first_rows(dataset.split(p.args.split), p.args.eval_rows);
        if eval.is_empty() {
            return Err(StageError::Input(format!("the {} split of {} is empty", p.args.split, p.args.dataset)));
        }
        let pool = thread_pool(ctx.threads)?;
        let done = AtomicU64::new(0);
        let progress = ctx.progress;
        let seed = ctx.seed;
        let curves: Vec<Result<Vec<CurvePoint>, StageError>> = pool.install(|| {
            starts
                .par_iter()
                .enumerate()
                .map(|(run, (_, theta))| {
                    let mut theta = theta.clone();
                    let mut shuffle = rng::stream(seed, "finetune shuffle", run as u64);
                    let curve = finetune(&layout, &mut theta, &dataset.train, &eval, &p.config, &mut shuffle)
                        .map_err(|e| StageError::Failed(format!("run {run}: {e}")));
                    progress.progress(done.fetch_add(1, Ordering::Relaxed) + 1, p.args.runs as u64, "runs");
                    curve
                })
                .collect()
        });
        let mut rows = Vec::new();
        let mut finals = Vec::new();
        for (run, ((network, _), curve)) in starts.iter().zip(curves).enumerate() {
            let curve = curve?;
            finals.extend(curve.last().copied());
            rows.extend(curve_rows(run, p.args.init, *network, &curve));
        }
        let mean = |f: fn(&CurvePoint) -> f64| finals.iter().map(f).sum::<f64>() / finals.len().max(1) as f64;
        ctx.progress.metric("final_accuracy_mean", mean(|c| c.accuracy));
        ctx.progress.metric("final_loss_mean", mean(|c| c.loss));
        ctx.emit_rows("curve", rows);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{collect::Collect, testing};
    use std::collections::BTreeMap;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn finetune_params(init: &str, extra: &[(&str, Value)]) -> Params {
        let mut all = vec![("init", s(init)), ("weights", s("w")), ("dataset", s("uci-wdbc")), ("runs", Value::Int(3)), ("iterations", Value::Int(12)), ("eval_rows", Value::Int(0))];
        all.extend_from_slice(extra);
        testing::params(&Finetune, &all)
    }

    fn at(rows: &[Row], iteration: i64, column: &str) -> f64 {
        let values: Vec<f64> = rows.iter().filter(|r| r["iteration"].as_i64() == Some(iteration)).map(|r| r[column].as_f64().unwrap()).collect();
        values.iter().sum::<f64>() / values.len() as f64
    }

    #[test]
    fn a_trained_init_starts_better_than_the_prior() {
        let dir = testing::temp_dir("finetune");
        let collect = testing::params(
            &Collect,
            &[("dataset", s("uci-wdbc")), ("runs", Value::Int(3)), ("epochs", Value::Int(8)), ("skip_epochs", Value::Int(7)), ("record_every", Value::Int(8))],
        );
        testing::run(&Collect, &collect, BTreeMap::new(), &dir.join("collect"), 5).unwrap();
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&dir.join("collect"), "collect")])]);
        let learned = testing::run(&Finetune, &finetune_params("weights", &[]), inputs.clone(), &dir.join("learned"), 2).unwrap();
        let prior = testing::run(&Finetune, &finetune_params("prior", &[]), inputs, &dir.join("prior"), 2).unwrap();
        let (learned, prior) = (&learned["curve"], &prior["curve"]);
        // Runs 0..3 at iterations 0, 5, 10, 12.
        assert_eq!(learned.len(), 3 * 4);
        let iterations: Vec<i64> = learned.iter().filter(|r| r["run"].as_i64() == Some(0)).map(|r| r["iteration"].as_i64().unwrap()).collect();
        assert_eq!(iterations, [0, 5, 10, 12]);
        assert!(learned.iter().all(|r| r["init"].as_str() == Some("weights") && r.contains_key("network")));
        assert!(prior.iter().all(|r| r["init"].as_str() == Some("prior") && !r.contains_key("network")));
        assert!(at(learned, 0, "loss") < at(prior, 0, "loss"), "learned {} vs prior {}", at(learned, 0, "loss"), at(prior, 0, "loss"));
        assert!(at(learned, 0, "accuracy") > at(prior, 0, "accuracy") + 0.1);
        assert!(at(learned, 12, "loss") < at(prior, 12, "loss"));
        // The prior curve learns.
        assert!(at(prior, 12, "loss") < at(prior, 0, "loss"));

        // Networks trained under split seed 42 are not measured on another seed's test rows,
        // which hold some of their training rows; the prior has no such rows.
        let other_seed = [("split_seed", Value::Int(7))];
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&dir.join("collect"), "collect")])]);
        let err = testing::run(&Finetune, &finetune_params("weights", &other_seed), inputs.clone(), &dir.join("seed-7"), 1).unwrap_err();
        assert!(err.to_string().contains("trained on uci-wdbc/42") && err.to_string().contains("set `split_seed = 42`"), "{err}");
        testing::run(&Finetune, &finetune_params("prior", &other_seed), inputs, &dir.join("prior-7"), 1).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_parameters_are_clear_errors() {
        let no_weights = testing::params(&Finetune, &[("dataset", s("uci-wdbc"))]);
        assert!(Finetune.validate(&no_weights).unwrap_err().to_string().contains("init = \"weights\" needs `weights`"));
        let no_layout = testing::params(&Finetune, &[("dataset", s("uci-wdbc")), ("init", s("prior"))]);
        assert!(Finetune.validate(&no_layout).unwrap_err().to_string().contains("needs a `layout`"));
        let wrong = testing::params(&Finetune, &[("dataset", s("mnist")), ("init", s("prior")), ("layout", crate::kinds::int_list(&[30, 16, 16, 2]))]);
        assert!(Finetune.validate(&wrong).unwrap_err().to_string().contains("layout 30-16-16-2 does not fit mnist"));
        // A set whose layout does not fit the dataset: refused before any data is read.
        let dir = testing::temp_dir("finetune-bad");
        let toy = testing::params(&crate::kinds::toy_data::ToyData, &[("count", Value::Int(2))]);
        testing::run(&crate::kinds::toy_data::ToyData, &toy, BTreeMap::new(), &dir.join("toy"), 1).unwrap();
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&dir.join("toy"), "toy-data")])]);
        let params = testing::params(&Finetune, &[("weights", s("t")), ("dataset", s("fashion-mnist"))]);
        let err = testing::run(&Finetune, &params, inputs, &dir.join("f"), 1).unwrap_err().to_string();
        assert!(err.contains("does not fit fashion-mnist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
