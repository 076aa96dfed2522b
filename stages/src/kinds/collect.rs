//! `collect`: train N base MLPs and record their trajectories (docs/science.md 2.1-2.3).
//!
//! Defaults are the thesis's UCI setup (2.2). The MNIST setup (2.3) is `dataset = "mnist"`,
//! `layout = [784, 10, 10]`, `runs = 50`, `epochs = 25`, `skip_epochs = 5`,
//! `record_every = 10`, `optimizer = "sgd"`, `lr = 0.1`, `momentum = 0.9`,
//! `weight_decay = 1e-5`.
//!
//! Outputs: `weights.safetensors` (every record, run order, with `run`/`epoch`/`step`
//! columns) and the table `runs` (final train/val/test loss and accuracy per run).

use super::{check_layout_fits, layout_of, load_dataset, row, write_weights, OptimizerArgs};
use crate::collect::{collect, Checkpoints, CollectConfig, RunMetrics};
use crate::data::{mnist, uci, DatasetName, TrainingSplit, DEFAULT_SPLIT_SEED};
use crate::declare::KindParams;
use crate::kind::{NetworkColumns, ParamSpec, ParamType as T, Params, Resources, StageContext, StageError, StageKind, TableDecl, Value};
use crate::kind_params;
use crate::mlp::{train::batches_per_epoch, RecordRule, TrainConfig};

pub struct Collect;

kind_params! {
    /// The parameters of one `collect` instance, declared once (docs/science.md 2.1-2.3).
    struct Args {
        dataset: DatasetName = required, "Base task";
        layout: Vec<usize> = default(vec![30, 16, 16, 2]), "MLP layer sizes [n_0, ..., n_L]";
        runs: usize [T::POSITIVE_INT] = default(100), "Independent training runs";
        epochs: usize [T::POSITIVE_INT] = default(50), "Epochs per run";
        skip_epochs: usize = default(10), "Epochs recorded nothing at the start";
        record_every: usize [T::POSITIVE_INT] = default(4), "Record before every k-th minibatch step";
        batch_size: usize [T::POSITIVE_INT] = default(64), "Training minibatch size";
        ..optimizer: OptimizerArgs;
        split_seed: u64 = default(DEFAULT_SPLIT_SEED), "Seed of the train/val/test split";
        eval_batch: usize [T::POSITIVE_INT] = default(64), "Batch size of the final evaluation";
    }
}

impl Collect {
    fn config(params: &Params, seed: u64) -> Result<(Args, CollectConfig), StageError> {
        let a = Args::parse(params)?;
        let layout = layout_of(&a.layout)?;
        check_layout_fits(&layout, a.dataset)?;
        if a.skip_epochs >= a.epochs {
            return Err(StageError::Param(format!(
                "skip_epochs ({}) must be below epochs ({}), or nothing is recorded",
                a.skip_epochs, a.epochs
            )));
        }
        let config = CollectConfig {
            layout,
            runs: a.runs,
            train: TrainConfig { epochs: a.epochs, batch_size: a.batch_size, optimizer: a.optimizer.config()? },
            record: RecordRule { skip_epochs: a.skip_epochs, every: a.record_every },
            eval_batch: a.eval_batch,
            seed,
        };
        Ok((a, config))
    }

    fn train_rows(dataset: DatasetName) -> usize {
        match dataset {
            DatasetName::UciWdbc => uci::TRAIN,
            DatasetName::Mnist | DatasetName::FashionMnist => 60_000,
        }
    }

    fn eval_rows(dataset: DatasetName) -> usize {
        match dataset {
            DatasetName::UciWdbc => uci::ROWS,
            DatasetName::Mnist | DatasetName::FashionMnist => 60_000 + 2 * mnist::TEST,
        }
    }
}

fn metrics_row(m: &RunMetrics) -> crate::kind::Row {
    row([
        ("run", Value::Int(m.run as i64)),
        ("records", Value::Int(m.records as i64)),
        ("train_loss", Value::Float(m.train_loss)),
        ("train_accuracy", Value::Float(m.train_accuracy)),
        ("val_loss", Value::Float(m.val_loss)),
        ("val_accuracy", Value::Float(m.val_accuracy)),
        ("test_loss", Value::Float(m.test_loss)),
        ("test_accuracy", Value::Float(m.test_accuracy)),
    ])
}

impl StageKind for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Train base MLPs from N(0, 0.1²) and record their weights along the way (target samples)"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::weights().with_network_columns(NetworkColumns::Own(&["run", "epoch", "step"])).with_tables(&[TableDecl::new(
            "runs",
            &["run", "records", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"],
        )]))
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        Self::config(params, 0).map(|_| ())
    }

    fn resources(&self, params: &Params) -> Resources {
        let runs = Args::parse(params).map_or(1, |a| a.runs).clamp(1, 16) as u32;
        Resources { cpus: runs.min(8), ..Resources::default() }
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let (Args { dataset, .. }, config) = Self::config(params, 0).ok()?;
        // Forward + backward ≈ 6 FLOPs per weight per row; the final evaluation 2.
        let weights = config.layout.num_weights() as f64;
        let train_rows = (Self::train_rows(dataset) * config.train.epochs) as f64;
        Some(config.runs as f64 * weights * (6.0 * train_rows + 2.0 * Self::eval_rows(dataset) as f64))
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let (a, config) = Self::config(ctx.params, ctx.seed)?;
        let dataset_name = a.dataset;
        let dataset = load_dataset(ctx, dataset_name, a.split_seed)?;
        let per_run = config.record.records_per_run(config.train.epochs, batches_per_epoch(dataset.train.len(), config.train.batch_size));
        tracing::info!(runs = config.runs, per_run, "collecting {} on {}", config.layout, dataset_name);
        let progress = ctx.progress;
        let checkpoints = Checkpoints::new(ctx.scratch_dir);
        let (mut weights, metrics) = collect(&config, &dataset, &checkpoints, ctx.threads, &|done, total| progress.progress(done, total, "runs"))
            .map_err(|e| StageError::Failed(e.to_string()))?;
        weights.trained_on = Some(TrainingSplit { dataset: dataset_name, split_seed: a.split_seed });
        write_weights(&weights, ctx.out_dir)?;
        let mean = |f: fn(&RunMetrics) -> f64| metrics.iter().map(f).sum::<f64>() / metrics.len() as f64;
        ctx.progress.metric("test_accuracy_mean", mean(|m| m.test_accuracy));
        ctx.progress.metric("test_loss_mean", mean(|m| m.test_loss));
        ctx.emit_rows("runs", metrics.iter().map(metrics_row));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing;
    use crate::weights::WeightSet;
    use std::collections::BTreeMap;

    fn small(runs: i64) -> Params {
        testing::params(
            &Collect,
            &[
                ("dataset", Value::Str("uci-wdbc".into())),
                ("runs", Value::Int(runs)),
                ("epochs", Value::Int(3)),
                ("skip_epochs", Value::Int(1)),
            ],
        )
    }

    #[test]
    fn sgd_momentum_must_be_below_one_and_adam_ignores_it() {
        let with = |optimizer: &str, momentum: f64| {
            let mut p = small(1);
            p.0.insert("optimizer".into(), Value::Str(optimizer.into()));
            p.0.insert("momentum".into(), Value::Float(momentum));
            Collect.validate(&p)
        };
        assert!(with("sgd", 0.9).is_ok());
        let err = with("sgd", 1.0).unwrap_err().to_string();
        assert!(err.contains("`momentum` must be below 1, got 1"), "{err}");
        assert!(with("adam", 1.0).is_ok());
        use crate::kinds::finetune::Finetune;
        let finetune = testing::params(&Finetune, &[
            ("weights", Value::Str("w".into())), ("dataset", Value::Str("uci-wdbc".into())), ("optimizer", Value::Str("sgd".into())), ("momentum", Value::Float(1.5)),
        ]);
        let err = Finetune.validate(&finetune).unwrap_err().to_string();
        assert!(err.contains("`momentum` must be a number in [0, 1], got 1.5"), "{err}");
    }

    #[test]
    fn records_follow_the_rule_and_the_same_seed_gives_identical_bytes() {
        let dir = testing::temp_dir("collect");
        let params = small(3);
        let tables = testing::run(&Collect, &params, BTreeMap::new(), &dir.join("a"), 7).unwrap();
        testing::run(&Collect, &params, BTreeMap::new(), &dir.join("b"), 7).unwrap();
        let a = std::fs::read(dir.join("a/weights.safetensors")).unwrap();
        let b = std::fs::read(dir.join("b/weights.safetensors")).unwrap();
        assert_eq!(a, b, "same seed, different bytes");
        let set = WeightSet::read(&dir.join("a/weights.safetensors")).unwrap();
        // 455 rows / 64 = 8 batches, records at steps 0 and 4, epochs 1 and 2, 3 runs.
        assert_eq!(set.count, 3 * 2 * 2);
        assert_eq!(set.column("step").unwrap()[..4], [0, 4, 0, 4]);
        assert_eq!(set.column("epoch").unwrap()[..4], [1, 1, 2, 2]);
        assert_eq!(set.column("run").unwrap()[4], 1);
        assert_eq!(tables["runs"].len(), 3);
        testing::run(&Collect, &params, BTreeMap::new(), &dir.join("c"), 8).unwrap();
        assert_ne!(a, std::fs::read(dir.join("c/weights.safetensors")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resumes_from_finished_runs() {
        let dir = testing::temp_dir("collect-resume");
        let out = dir.join("out");
        testing::run(&Collect, &small(2), BTreeMap::new(), &out, 3).unwrap();
        let first = std::fs::read(out.join("weights.safetensors")).unwrap();
        // Corrupt nothing but mark run 0's checkpoint: a re-run must reuse it as is.
        let ckpt = out.join("scratch/run-00000.safetensors");
        let mut set = WeightSet::read(&ckpt).unwrap();
        set.data[0] = 123.0;
        set.write(&ckpt).unwrap();
        testing::run(&Collect, &small(2), BTreeMap::new(), &out, 3).unwrap();
        let resumed = WeightSet::read(&out.join("weights.safetensors")).unwrap();
        assert_eq!(resumed.data[0], 123.0, "run 0 was retrained instead of resumed");
        assert_ne!(first, std::fs::read(out.join("weights.safetensors")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_parameters_are_rejected_with_clear_messages() {
        let wrong_layout = testing::params(
            &Collect,
            &[("dataset", Value::Str("mnist".into())), ("layout", crate::kinds::int_list(&[30, 16, 2]))],
        );
        let err = Collect.validate(&wrong_layout).unwrap_err().to_string();
        assert!(err.contains("layout 30-16-2 does not fit mnist") && err.contains("784 inputs"), "{err}");
        let nothing_recorded = testing::params(
            &Collect,
            &[("dataset", Value::Str("uci-wdbc".into())), ("epochs", Value::Int(5)), ("skip_epochs", Value::Int(5))],
        );
        assert!(Collect.validate(&nothing_recorded).unwrap_err().to_string().contains("skip_epochs"));
        let unknown = testing::params(&Collect, &[("dataset", Value::Str("cifar".into()))]);
        assert!(Collect.validate(&unknown).unwrap_err().to_string().contains("unknown dataset `cifar`"));
    }
}
