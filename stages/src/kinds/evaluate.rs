//! `evaluate`: the quality of a weight set on a task (docs/science.md 8.1-8.3, 8.5), or the toy
//! statistics of a set with no task (8.7).
//!
//! Task mode (`dataset` set): every network (or a seeded random subset of `count`) is
//! evaluated on the split, with the loss averaging of 1.3; a seeded subset of
//! `diversity_networks` gives the KDE/JSD diversity of 8.2; the first networks of another
//! seeded order give the model-averaging curve of 8.3.
//!
//! Tables:
//! - `metrics`: one row per network (`row_type = "network"`: `network` = index in the input
//!   set, `accuracy`, `loss`, and the set's integer columns such as `run`, `epoch`, `step`)
//!   and one `row_type = "summary"` row (`accuracy`/`loss` = means, `accuracy_std`/`loss_std`
//!   = population std over networks, `networks`, and the diversity: `diversity`,
//!   `diversity_std` over the N² pairs with the zero diagonal, `diversity_pairs`,
//!   `diversity_pairs_std` over i < j, `diversity_networks`, `diversity_inputs`);
//! - with `targets` (the weight set the flow was trained on): per network `nearest_target`,
//!   the distance to the nearest target, and in the summary row its mean and std and
//!   `target_spacing` / `target_spacing_std`, the distance from a target to its nearest
//!   other target, over as many seeded random targets as networks evaluated
//!   ([`crate::eval::novelty`]);
//! - `bma`: `models`, `accuracy`, `loss` of the averaged prediction.
//!
//! Toy mode (`mode = "toy"`, no dataset): table `toy` with per-network `coordinate_mean` and
//! `coordinate_std` and a summary row (`coordinate_mean`, `coordinate_mean_std`: the spread
//! of the per-sample means, `coordinate_std`, `across_sample_std`, `networks`).

use rand::seq::SliceRandom;

use super::{check_layout_fits, layout_of, row, thread_pool};
use crate::data::{self, DatasetName, SplitName};
use crate::eval::bma::{bma_curve, usable_grid, Averaging, BmaPoint};
use crate::eval::diversity::{diversity, output_sets, Diversity, DiversityConfig, JsdForm};
use crate::eval::metrics::evaluate_networks;
use crate::eval::novelty::{nearest_target, target_spacing};
use crate::stats::MeanStd;
use crate::eval::toy::{toy_statistics, SampleStats, ToySummary};
use crate::declare::{KindParams, StageRef};
use crate::kind::{ParamSpec, ParamType as T, Params, Resources, Row, StageContext, StageError, StageKind, TableDecl, Value, NETWORK_ROW, ROW_TYPE, SUMMARY_ROW};
use crate::kind_params;
use crate::layout::Layout;
use crate::mlp::Metrics;
use crate::rng;
use crate::weights::{WeightSet, FILE_NAME};

pub struct Evaluate;

/// The `mode` parameter's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModeWord {
    Task,
    Toy,
}
crate::words!(ModeWord, "mode", { Task = "task", Toy = "toy" });

kind_params! {
    /// The parameters of one `evaluate` instance, declared once (docs/science.md 8.1-8.3, 8.7).
    struct Args {
        weights: StageRef = required, "stage whose weights.safetensors to evaluate";
        mode: ModeWord = default(ModeWord::Task), "task: accuracy, loss, diversity, model averaging; toy: coordinate statistics (no dataset)";
        dataset: Option<DatasetName> = default(None), "task to evaluate on (\"none\" with mode = \"toy\")";
        layout: Vec<usize> = default(Vec::new()), "layout the set must have (empty: the set's own); checked against the dataset at plan time";
        split: SplitName = default(SplitName::Test), "split to evaluate on";
        split_seed: u64 = default(data::DEFAULT_SPLIT_SEED), "seed of the train/val/test split (the collection's, so the test rows are unseen)";
        eval_batch: usize [T::POSITIVE_INT] = default(crate::mlp::EVAL_BATCH), "batch size of the per-batch loss averaging (docs/science.md 1.3)";
        count: usize = default(0), "networks evaluated: 0 for all, else a seeded random subset";
        diversity_networks: usize = default(64), "N: networks in the diversity estimate (0: skip it)";
        diversity_inputs: usize [T::POSITIVE_INT] = default(1000), "K: first rows of the split whose softmax outputs form each set";
        kde_bandwidth: f64 [T::POSITIVE_FLOAT] = default(1.0), "h: Gaussian KDE bandwidth";
        jsd_form: JsdForm = default(JsdForm::MonteCarlo), "monte-carlo, or density-weighted (thesis Eq. 7.2 literally)";
        bma_models: Vec<usize> = default(vec![1, 2, 4, 8, 16, 32, 64]), "numbers of networks averaged (empty: skip; above the set size: skipped)";
        targets: StageRef = added(StageRef::NONE), "the weight set the flow was trained on: adds each sample's distance to its nearest target and the targets' own spacing";
        bma_average: Averaging = default(Averaging::Probabilities), "probabilities (Eq. 2.1) or logits (the code's model_average)";
    }
}

/// What to compute.
enum Mode {
    Task(DatasetName),
    Toy,
}

/// The parameters, checked together, and what follows from them.
struct EvaluateParams {
    args: Args,
    mode: Mode,
    /// The layout the set must have (`None`: whatever it has).
    layout: Option<Layout>,
    diversity: DiversityConfig,
}

impl EvaluateParams {
    fn parse(params: &Params) -> Result<Self, StageError> {
        let args = Args::parse(params)?;
        let mode = match (args.mode, args.dataset) {
            (ModeWord::Task, Some(name)) => Mode::Task(name),
            (ModeWord::Task, None) => {
                return Err(StageError::Param("`dataset` is \"none\": set the task to evaluate on, or mode = \"toy\" for a set with no task".into()))
            }
            (ModeWord::Toy, None) => Mode::Toy,
            (ModeWord::Toy, Some(name)) => {
                return Err(StageError::Param(format!("mode = \"toy\" evaluates no task, but `dataset` is \"{name}\": set dataset = \"none\" or mode = \"task\"")))
            }
        };
        let layout = if args.layout.is_empty() { None } else { Some(layout_of(&args.layout)?) };
        if let (Mode::Task(name), Some(layout)) = (&mode, &layout) {
            check_layout_fits(layout, *name)?;
        }
        if args.bma_models.contains(&0) {
            return Err(StageError::Param("`bma_models` entries must be at least 1".into()));
        }
        let diversity = DiversityConfig { bandwidth: args.kde_bandwidth, form: args.jsd_form };
        Ok(EvaluateParams { args, mode, layout, diversity })
    }

    /// Rows of the split evaluated (for cost estimates).
    fn split_rows(&self, dataset: DatasetName) -> usize {
        match (dataset, self.args.split) {
            (DatasetName::UciWdbc, SplitName::Train) => data::uci::TRAIN,
            (DatasetName::UciWdbc, _) => data::uci::VAL,
            (_, SplitName::Train) => 60_000,
            (_, _) => data::mnist::TEST,
        }
    }
}

/// The thesis's layout for a task, for estimates when `layout` is left to the input.
use super::usual_layout;

/// The input weight set, with a clear message when the referenced stage wrote none.
fn read_weights(ctx: &StageContext<'_>) -> Result<WeightSet, StageError> {
    let input = ctx.input("weights")?;
    let path = input.require_file("weights", FILE_NAME, Some("evaluate reads weight sets (collect, align, canonicalize, sample, toy-data)"))?;
    Ok(WeightSet::read(&path)?)
}

/// The weight set `targets` names, if any, with the layout of the evaluated set.
fn read_targets(ctx: &StageContext<'_>, set: &WeightSet) -> Result<Option<WeightSet>, StageError> {
    let Some(input) = ctx.optional_input("targets")? else { return Ok(None) };
    let path = input.require_file("targets", FILE_NAME, None)?;
    let targets = WeightSet::read(&path)?;
    if targets.layout != set.layout {
        return Err(StageError::Input(format!(
            "`targets` ({}) has layout {} but the evaluated set has {}: distances need one representation",
            input.instance, targets.layout, set.layout
        )));
    }
    Ok(Some(targets))
}

/// Per evaluated network its distance to the nearest target, and the targets' own spacing.
struct Novelty {
    nearest: Vec<f64>,
    spacing: MeanStd,
}

/// The spacing is measured from as many seeded random targets as there are networks
/// evaluated (to their nearest among all targets): the same size of estimate as the
/// samples' distances, at a cost that does not grow with the square of the target set.
fn novelty(set: &WeightSet, indices: &[usize], targets: &WeightSet, seed: u64, pool: &rayon::ThreadPool) -> Option<Novelty> {
    let all: Vec<usize> = (0..targets.count).collect();
    let t = rows_of(targets, &all);
    let mut chosen = shuffled(&all, seed, "evaluate target spacing");
    chosen.truncate(indices.len());
    let dim = set.params();
    let (nearest, spacing) = pool.install(|| (nearest_target(&rows_of(set, indices), &t, dim), target_spacing(&chosen, &t, dim)));
    Some(Novelty { nearest, spacing: MeanStd::of(spacing.into_iter().filter(|d| d.is_finite()))? })
}

/// Indices of the networks to evaluate: all of them, or a seeded random subset in index order.
fn chosen_networks(set: &WeightSet, count: usize, seed: u64) -> Result<Vec<usize>, StageError> {
    if count > set.count {
        return Err(StageError::Param(format!("count {count} exceeds the {} networks in the set", set.count)));
    }
    let mut indices: Vec<usize> = (0..set.count).collect();
    if count > 0 && count < set.count {
        indices.shuffle(&mut rng::stream(seed, "evaluate subset", 0));
        indices.truncate(count);
        indices.sort_unstable();
    }
    Ok(indices)
}

/// `indices` in a seeded random order: consecutive records of one run are near-copies, so
/// diversity and model averaging must not take the first networks of a collection.
fn shuffled(indices: &[usize], seed: u64, purpose: &str) -> Vec<usize> {
    let mut order = indices.to_vec();
    order.shuffle(&mut rng::stream(seed, purpose, 0));
    order
}

fn rows_of<'a>(set: &'a WeightSet, indices: &[usize]) -> Vec<&'a [f32]> {
    indices.iter().map(|&i| set.row(i)).collect()
}

/// The tables evaluate emits. Per-network rows carry the weight set's own columns (`run`,
/// `epoch`, ...); the summary row carries the spreads and diversity.
fn metrics_table() -> TableDecl {
    TableDecl::new(
        METRICS_TABLE,
        &[
            "row_type", "network", "accuracy", "loss", "networks", "accuracy_std", "loss_std", "diversity", "diversity_std",
            "diversity_networks", "diversity_inputs", "diversity_pairs", "diversity_pairs_std", "nearest_target",
            "nearest_target_std", "target_spacing", "target_spacing_std",
        ],
    )
    .with_network_columns_of("weights")
}
const METRICS_TABLE: &str = "metrics";
const BMA_TABLE: &str = "bma";
const TOY_TABLE: &str = "toy";

fn bma_table() -> TableDecl {
    TableDecl::new(BMA_TABLE, &["models", "accuracy", "loss"])
}

fn toy_table() -> TableDecl {
    TableDecl::new(
        TOY_TABLE,
        &["row_type", "network", "coordinate_mean", "coordinate_std", "networks", "coordinate_mean_std", "across_sample_std"],
    )
}

fn network_row(set: &WeightSet, index: usize, m: &Metrics, nearest: Option<f64>) -> Row {
    let mut r = row([
        (ROW_TYPE, Value::Str(NETWORK_ROW.into())),
        ("network", Value::Int(index as i64)),
        ("accuracy", Value::Float(m.accuracy)),
        ("loss", Value::Float(m.loss)),
    ]);
    if let Some(d) = nearest {
        r.insert("nearest_target".into(), Value::Float(d));
    }
    for (name, values) in &set.columns {
        r.entry(name.clone()).or_insert(Value::Int(values[index]));
    }
    r
}

fn summary_row(metrics: &[Metrics], diversity: Option<&Diversity>, novelty: Option<&Novelty>) -> Row {
    let accuracy = MeanStd::of(metrics.iter().map(|m| m.accuracy)).expect("at least one network");
    let loss = MeanStd::of(metrics.iter().map(|m| m.loss)).expect("at least one network");
    let mut r = row([
        (ROW_TYPE, Value::Str(SUMMARY_ROW.into())),
        ("networks", Value::Int(metrics.len() as i64)),
        ("accuracy", Value::Float(accuracy.mean)),
        ("accuracy_std", Value::Float(accuracy.std)),
        ("loss", Value::Float(loss.mean)),
        ("loss_std", Value::Float(loss.std)),
    ]);
    if let Some(d) = diversity {
        r.insert("diversity".into(), Value::Float(d.all.mean));
        r.insert("diversity_std".into(), Value::Float(d.all.std));
        r.insert("diversity_networks".into(), Value::Int(d.networks as i64));
        r.insert("diversity_inputs".into(), Value::Int(d.inputs as i64));
        if let Some(pairs) = d.pairs {
            r.insert("diversity_pairs".into(), Value::Float(pairs.mean));
            r.insert("diversity_pairs_std".into(), Value::Float(pairs.std));
        }
    }
    if let Some(n) = novelty {
        let nearest = MeanStd::of(n.nearest.iter().copied()).expect("at least one network");
        r.insert("nearest_target".into(), Value::Float(nearest.mean));
        r.insert("nearest_target_std".into(), Value::Float(nearest.std));
        r.insert("target_spacing".into(), Value::Float(n.spacing.mean));
        r.insert("target_spacing_std".into(), Value::Float(n.spacing.std));
    }
    r
}

fn bma_row(p: &BmaPoint) -> Row {
    row([("models", Value::Int(p.models as i64)), ("accuracy", Value::Float(p.accuracy)), ("loss", Value::Float(p.loss))])
}

fn toy_rows(indices: &[usize], per_sample: &[SampleStats], summary: &ToySummary) -> Vec<Row> {
    let mut rows: Vec<Row> = indices
        .iter()
        .zip(per_sample)
        .map(|(&i, s)| {
            row([
                (ROW_TYPE, Value::Str(NETWORK_ROW.into())),
                ("network", Value::Int(i as i64)),
                ("coordinate_mean", Value::Float(s.coordinate_mean)),
                ("coordinate_std", Value::Float(s.coordinate_std)),
            ])
        })
        .collect();
    rows.push(row([
        (ROW_TYPE, Value::Str(SUMMARY_ROW.into())),
        ("networks", Value::Int(per_sample.len() as i64)),
        ("coordinate_mean", Value::Float(summary.sample_means.mean)),
        ("coordinate_mean_std", Value::Float(summary.sample_means.std)),
        ("coordinate_std", Value::Float(summary.mean_coordinate_std)),
        ("across_sample_std", Value::Float(summary.mean_across_sample_std)),
    ]));
    rows
}

impl Evaluate {
    fn run_toy(ctx: &mut StageContext<'_>, set: &WeightSet, indices: &[usize]) -> Result<(), StageError> {
        let data: Vec<f32> = indices.iter().flat_map(|&i| set.row(i).iter().copied()).collect();
        let (per_sample, summary) = toy_statistics(&data, set.params())?;
        ctx.progress.metric("coordinate_mean", summary.sample_means.mean);
        ctx.progress.metric("coordinate_mean_std", summary.sample_means.std);
        ctx.emit_rows(TOY_TABLE, toy_rows(indices, &per_sample, &summary));
        Ok(())
    }

    fn run_task(
        ctx: &mut StageContext<'_>,
        p: &EvaluateParams,
        name: DatasetName,
        set: &WeightSet,
        indices: &[usize],
        targets: Option<&WeightSet>,
    ) -> Result<(), StageError> {
        data::TrainingSplit::refuse_seen(set.trained_on, name, p.args.split, p.args.split_seed).map_err(StageError::Param)?;
        let dataset = data::load(name, ctx.data_dir, p.args.split_seed)?;
        let split = dataset.split(p.args.split);
        let layout = &set.layout;
        let pool = thread_pool(ctx.threads)?;
        const PHASES: u64 = 3;

        let metrics = pool.install(|| evaluate_networks(layout, &rows_of(set, indices), split, p.args.eval_batch))?;
        ctx.progress.progress(1, PHASES, "phases");

        let diversity = if p.args.diversity_networks > 0 {
            let mut order = shuffled(indices, ctx.seed, "evaluate diversity");
            order.truncate(p.args.diversity_networks);
            let sets = pool.install(|| output_sets(layout, &rows_of(set, &order), split, p.args.diversity_inputs))?;
            Some(pool.install(|| diversity(&sets, layout.outputs(), p.diversity))?)
        } else {
            None
        };
        ctx.progress.progress(2, PHASES, "phases");

        let grid = usable_grid(&p.args.bma_models, indices.len());
        if grid.len() < p.args.bma_models.len() {
            tracing::warn!(available = indices.len(), "bma_models entries above the number of networks are skipped");
        }
        let curve = match grid.last() {
            Some(&largest) => {
                let mut order = shuffled(indices, ctx.seed, "evaluate bma");
                order.truncate(largest);
                pool.install(|| bma_curve(layout, &rows_of(set, &order), split, p.args.eval_batch, &grid, p.args.bma_average))?
            }
            None => Vec::new(),
        };
        ctx.progress.progress(3, PHASES, "phases");

        let novelty = targets.and_then(|t| novelty(set, indices, t, ctx.seed, &pool));
        let summary = summary_row(&metrics, diversity.as_ref(), novelty.as_ref());
        for key in ["accuracy", "loss", "diversity"] {
            if let Some(v) = summary.get(key).and_then(Value::as_f64) {
                ctx.progress.metric(&format!("{key}_mean"), v);
            }
        }
        if let Some(last) = curve.last() {
            ctx.progress.metric("bma_accuracy", last.accuracy);
        }
        let nearest = |k: usize| novelty.as_ref().map(|n| n.nearest[k]);
        let mut rows: Vec<Row> = indices.iter().zip(&metrics).enumerate().map(|(k, (&i, m))| network_row(set, i, m, nearest(k))).collect();
        rows.push(summary);
        ctx.emit_rows(METRICS_TABLE, rows);
        ctx.emit_rows(BMA_TABLE, curve.iter().map(bma_row));
        Ok(())
    }
}

impl StageKind for Evaluate {
    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Per-network accuracy and loss, functional diversity and model averaging of a weight set; toy statistics for sets with no task"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, params: &Params) -> Option<crate::kind::Produces> {
        let toy = EvaluateParams::parse(params).is_ok_and(|p| matches!(p.mode, Mode::Toy));
        Some(crate::kind::Produces::tables(&if toy { vec![toy_table()] } else { vec![metrics_table(), bma_table()] }))
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Weights
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        EvaluateParams::parse(params).map(|_| ())
    }

    fn resources(&self, params: &Params) -> Resources {
        match EvaluateParams::parse(params).map(|p| p.mode) {
            Ok(Mode::Task(DatasetName::Mnist | DatasetName::FashionMnist)) => Resources { cpus: 2, mem_mb: 2048, ..Resources::default() },
            _ => Resources::default(),
        }
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let p = EvaluateParams::parse(params).ok()?;
        // `count` = 0 (every network) is known only at run time: estimate per 1,000 networks.
        let networks = if p.args.count > 0 { p.args.count } else { 1_000 } as f64;
        match p.mode {
            Mode::Toy => Some(networks * 1_000.0 * 4.0),
            Mode::Task(name) => {
                let layout = p.layout.clone().unwrap_or_else(|| usual_layout(name));
                let rows = p.split_rows(name) as f64;
                let forward = 2.0 * layout.num_weights() as f64 * rows;
                let bma = p.args.bma_models.iter().copied().max().unwrap_or(0) as f64;
                let n = (p.args.diversity_networks as f64).min(networks);
                let k = p.args.diversity_inputs.min(p.split_rows(name)) as f64;
                // Each pair: one K×K×C sgemm plus ~10 FLOPs of kernel arithmetic per entry.
                let kde = n * (n + 1.0) / 2.0 * k * k * (2.0 * layout.outputs() as f64 + 10.0);
                Some((networks + bma + n) * forward + kde)
            }
        }
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let p = EvaluateParams::parse(ctx.params)?;
        let set = read_weights(ctx)?;
        if let Some(layout) = &p.layout {
            set.expect_layout(layout)?;
        }
        // Every input check happens before the dataset is loaded or anything computes.
        if let Mode::Task(name) = p.mode {
            check_layout_fits(&set.layout, name)?;
        }
        let targets = read_targets(ctx, &set)?;
        let indices = chosen_networks(&set, p.args.count, ctx.seed)?;
        tracing::info!(networks = indices.len(), "evaluating {set}");
        match p.mode {
            Mode::Toy => Self::run_toy(ctx, &set, &indices),
            Mode::Task(name) => Self::run_task(ctx, &p, name, &set, &indices, targets.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{collect::Collect, testing, toy_data::ToyData};
    use crate::mlp::{self, grad::Workspace};
    use crate::weights::{encode_safetensors, TensorRef};
    use std::collections::BTreeMap;
    use std::path::Path;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    /// A few trained UCI networks (one record per run, late in training).
    fn collect_uci(dir: &Path) -> WeightSet {
        let params = testing::params(
            &Collect,
            &[("dataset", s("uci-wdbc")), ("runs", Value::Int(4)), ("epochs", Value::Int(40)), ("skip_epochs", Value::Int(39)), ("record_every", Value::Int(8))],
        );
        testing::run(&Collect, &params, BTreeMap::new(), dir, 3).unwrap();
        WeightSet::read(&dir.join(FILE_NAME)).unwrap()
    }

    fn inputs(dir: &Path, kind: &str) -> BTreeMap<String, Vec<crate::kind::InputArtifact>> {
        BTreeMap::from([("weights".to_owned(), vec![testing::input(dir, kind)])])
    }

    fn uci_params(extra: &[(&str, Value)]) -> Params {
        let mut all = vec![("weights", s("w")), ("dataset", s("uci-wdbc"))];
        all.extend_from_slice(extra);
        testing::params(&Evaluate, &all)
    }

    fn summary(tables: &BTreeMap<String, Vec<Row>>, table: &str) -> Row {
        tables[table].iter().find(|r| r["row_type"].as_str() == Some("summary")).cloned().expect("a summary row")
    }

    #[test]
    fn a_test_split_the_networks_were_trained_on_is_refused() {
        let dir = testing::temp_dir("evaluate-uci-split");
        let set = collect_uci(&dir.join("collect"));
        assert_eq!(set.trained_on, Some(data::TrainingSplit { dataset: DatasetName::UciWdbc, split_seed: data::DEFAULT_SPLIT_SEED }));
        let other = uci_params(&[("split_seed", Value::Int(7))]);
        let err = testing::run(&Evaluate, &other, inputs(&dir.join("collect"), "collect"), &dir.join("eval-7"), 1).unwrap_err();
        assert!(err.to_string().contains("trained on uci-wdbc/42") && err.to_string().contains("set `split_seed = 42`"), "{err}");
        // Their own training rows may still be scored.
        let train = uci_params(&[("split_seed", Value::Int(7)), ("split", s("train"))]);
        testing::run(&Evaluate, &train, inputs(&dir.join("collect"), "collect"), &dir.join("eval-train"), 1).unwrap();
    }

    #[test]
    fn per_network_metrics_of_trained_uci_networks_match_the_trainer_evaluation() {
        let dir = testing::temp_dir("evaluate-uci");
        let set = collect_uci(&dir.join("collect"));
        assert_eq!(set.count, 4);
        let tables = testing::run(&Evaluate, &uci_params(&[]), inputs(&dir.join("collect"), "collect"), &dir.join("eval"), 1).unwrap();
        let uci = data::load(DatasetName::UciWdbc, Path::new("unused"), data::DEFAULT_SPLIT_SEED).unwrap();
        let networks: Vec<&Row> = tables["metrics"].iter().filter(|r| r["row_type"].as_str() == Some("network")).collect();
        assert_eq!(networks.len(), 4);
        for (i, r) in networks.iter().enumerate() {
            let reference = mlp::evaluate(&set.layout, set.row(i), &uci.test, 64, &mut Workspace::default());
            assert_eq!(r["network"], Value::Int(i as i64));
            assert_eq!(r["accuracy"].as_f64().unwrap(), reference.accuracy);
            assert!((r["loss"].as_f64().unwrap() - reference.loss).abs() < 1e-6, "{r:?} vs {reference:?}");
            assert_eq!(r["run"], Value::Int(i as i64), "the set's columns are carried");
            assert!(reference.accuracy > 0.85, "trained networks: {reference:?}");
        }
        let sum = summary(&tables, "metrics");
        let mean_acc = networks.iter().map(|r| r["accuracy"].as_f64().unwrap()).sum::<f64>() / 4.0;
        assert!((sum["accuracy"].as_f64().unwrap() - mean_acc).abs() < 1e-12);
        assert_eq!(sum["networks"], Value::Int(4));
        assert_eq!(sum["diversity_networks"], Value::Int(4));
        assert_eq!(sum["diversity_inputs"], Value::Int(57), "K is cut to the 57 test rows");
        assert!(sum["diversity"].as_f64().unwrap() > 0.0);
        // The grid 1..64 is cut to the 4 networks.
        let models: Vec<i64> = tables["bma"].iter().map(|r| r["models"].as_i64().unwrap()).collect();
        assert_eq!(models, [1, 2, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copies_of_one_network_have_zero_diversity_and_average_to_themselves() {
        let dir = testing::temp_dir("evaluate-copies");
        let set = collect_uci(&dir.join("collect"));
        let copies = WeightSet::from_rows(set.layout.clone(), vec![set.row(2); 8]).unwrap();
        std::fs::create_dir_all(dir.join("copies")).unwrap();
        copies.write(&dir.join("copies").join(FILE_NAME)).unwrap();
        for average in ["probabilities", "logits"] {
            let params = uci_params(&[("bma_average", s(average)), ("bma_models", crate::kinds::int_list(&[1, 8]))]);
            let tables = testing::run(&Evaluate, &params, inputs(&dir.join("copies"), "collect"), &dir.join("eval"), 1).unwrap();
            let sum = summary(&tables, "metrics");
            assert!(sum["diversity"].as_f64().unwrap().abs() < 1e-12, "{sum:?}");
            assert_eq!(sum["accuracy_std"].as_f64(), Some(0.0));
            let single = sum["accuracy"].as_f64().unwrap();
            for r in &tables["bma"] {
                assert_eq!(r["accuracy"].as_f64().unwrap(), single, "{average}: {r:?}");
                assert!((r["loss"].as_f64().unwrap() - sum["loss"].as_f64().unwrap()).abs() < 1e-5, "{average}: {r:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn toy_mode_summarizes_coordinates() {
        let dir = testing::temp_dir("evaluate-toy");
        let toy = testing::params(&ToyData, &[("count", Value::Int(300))]);
        testing::run(&ToyData, &toy, BTreeMap::new(), &dir.join("toy"), 4).unwrap();
        let params = testing::params(&Evaluate, &[("weights", s("t")), ("mode", s("toy"))]);
        let tables = testing::run(&Evaluate, &params, inputs(&dir.join("toy"), "toy-data"), &dir.join("eval"), 1).unwrap();
        assert!(!tables.contains_key("metrics"));
        assert_eq!(tables["toy"].len(), 301);
        let sum = summary(&tables, "toy");
        assert!((sum["coordinate_mean"].as_f64().unwrap() - 1.0).abs() < 0.01, "{sum:?}");
        assert!((sum["coordinate_mean_std"].as_f64().unwrap() - 0.0353).abs() < 0.006, "{sum:?}");
        assert!((sum["across_sample_std"].as_f64().unwrap() - 1.0).abs() < 0.03, "{sum:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_inputs_are_clear_errors_before_any_compute() {
        let dir = testing::temp_dir("evaluate-bad");
        // A toy set (layout 30-16-16-2) on MNIST: refused before MNIST is even looked for.
        let toy = testing::params(&ToyData, &[("count", Value::Int(3))]);
        testing::run(&ToyData, &toy, BTreeMap::new(), &dir.join("toy"), 1).unwrap();
        let params = testing::params(&Evaluate, &[("weights", s("t")), ("dataset", s("mnist"))]);
        let err = testing::run(&Evaluate, &params, inputs(&dir.join("toy"), "toy-data"), &dir.join("e1"), 1).unwrap_err().to_string();
        assert!(err.contains("layout 30-16-16-2 does not fit mnist"), "{err}");
        // A declared layout that does not fit the dataset fails at plan time.
        let declared = testing::params(&Evaluate, &[("weights", s("t")), ("dataset", s("mnist")), ("layout", crate::kinds::int_list(&[30, 16, 2]))]);
        let err = Evaluate.validate(&declared).unwrap_err().to_string();
        assert!(err.contains("does not fit mnist") && err.contains("784 inputs"), "{err}");
        // A declared layout the set does not have.
        let other = uci_params(&[("layout", crate::kinds::int_list(&[30, 8, 2]))]);
        let err = testing::run(&Evaluate, &other, inputs(&dir.join("toy"), "toy-data"), &dir.join("e2"), 1).unwrap_err().to_string();
        assert!(err.contains("layout mismatch: expected 30-8-2"), "{err}");
        // Task mode needs a dataset; toy mode refuses one.
        let no_task = testing::params(&Evaluate, &[("weights", s("t"))]);
        assert!(Evaluate.validate(&no_task).unwrap_err().to_string().contains("mode = \"toy\""));
        let toy_with_task = testing::params(&Evaluate, &[("weights", s("t")), ("mode", s("toy")), ("dataset", s("mnist"))]);
        assert!(Evaluate.validate(&toy_with_task).unwrap_err().to_string().contains("evaluates no task"));
        // More networks asked for than the set holds.
        let too_many = uci_params(&[("count", Value::Int(10))]);
        let err = testing::run(&Evaluate, &too_many, inputs(&dir.join("toy"), "toy-data"), &dir.join("e3"), 1).unwrap_err().to_string();
        assert!(err.contains("count 10 exceeds the 3 networks"), "{err}");
        // An empty weight file.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let metadata = BTreeMap::from([
            ("format".to_owned(), crate::weights::FORMAT.to_owned()),
            ("layout".to_owned(), "[30,16,16,2]".to_owned()),
            ("aligned".to_owned(), "false".to_owned()),
            ("canonical".to_owned(), "false".to_owned()),
        ]);
        let mut bytes = Vec::new();
        encode_safetensors(vec![("weights".into(), TensorRef::F32 { shape: vec![0, 802], values: &[] })], &metadata, &mut bytes).unwrap();
        std::fs::write(empty.join(FILE_NAME), bytes).unwrap();
        let err = testing::run(&Evaluate, &uci_params(&[]), inputs(&empty, "sample"), &dir.join("e4"), 1).unwrap_err().to_string();
        assert!(err.contains("weight set is empty"), "{err}");
        // A stage that wrote no weights at all.
        let err = testing::run(&Evaluate, &uci_params(&[]), inputs(&dir.join("e1"), "train-flow"), &dir.join("e5"), 1).unwrap_err().to_string();
        assert!(err.contains("wrote no weights.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    /// Wall time of the whole kind on 512 MNIST networks (784-10-10) and the 5,000 test
    /// images on 2 threads, with the phases timed apart. Needs MNIST under `$WFPIPE_DATA`;
    /// run with `cargo test -p wfpipe-stages --lib -- --ignored --nocapture evaluation_speed`.
    #[test]
    #[ignore = "timing report; needs MNIST"]
    fn evaluation_speed_on_512_mnist_networks() {
        use crate::mlp::MlpConfig;
        use std::time::Instant;

        let dir = testing::temp_dir("evaluate-speed");
        let layout = Layout(vec![784, 10, 10]);
        let mlp = MlpConfig::new(layout.clone());
        let data: Vec<f32> = (0..512).flat_map(|i| mlp.init(&mut rng::stream(0, "speed", i))).collect();
        let set = WeightSet::new(layout.clone(), data).unwrap();
        std::fs::create_dir_all(dir.join("w")).unwrap();
        set.write(&dir.join("w").join(FILE_NAME)).unwrap();

        let start = Instant::now();
        let mnist = data::load(DatasetName::Mnist, &testing::data_dir(), data::DEFAULT_SPLIT_SEED).expect("MNIST under $WFPIPE_DATA/mnist");
        println!("load mnist: {:.2} s", start.elapsed().as_secs_f64());
        let pool = thread_pool(2).unwrap();
        let refs: Vec<&[f32]> = set.rows().collect();
        let start = Instant::now();
        pool.install(|| evaluate_networks(&layout, &refs, &mnist.test, 64)).unwrap();
        println!("metrics of 512 networks on {} images: {:.2} s", mnist.test.len(), start.elapsed().as_secs_f64());
        let start = Instant::now();
        let config = DiversityConfig { bandwidth: 1.0, form: JsdForm::MonteCarlo };
        let sets = pool.install(|| output_sets(&layout, &refs[..64], &mnist.test, 1000)).unwrap();
        let d = pool.install(|| diversity(&sets, 10, config)).unwrap();
        println!("diversity N = 64, K = 1000: {:.2} s ({:.3e})", start.elapsed().as_secs_f64(), d.all.mean);
        let start = Instant::now();
        pool.install(|| bma_curve(&layout, &refs[..64], &mnist.test, 64, &[1, 2, 4, 8, 16, 32, 64], Averaging::Probabilities)).unwrap();
        println!("bma up to 64 networks: {:.2} s", start.elapsed().as_secs_f64());

        let params = testing::params(&Evaluate, &[("weights", s("w")), ("dataset", s("mnist"))]);
        let start = Instant::now();
        let tables = testing::run(&Evaluate, &params, inputs(&dir.join("w"), "sample"), &dir.join("eval"), 1).unwrap();
        println!("evaluate kind, everything (2 threads): {:.2} s", start.elapsed().as_secs_f64());
        assert_eq!(tables["metrics"].len(), 513);
        assert_eq!(tables["bma"].len(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
