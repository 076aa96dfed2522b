//! `collect`: train N base MLPs and record their trajectories (docs/science.md 2.1-2.3).
//!
//! Defaults are the thesis's UCI setup (2.2). The MNIST setup (2.3) is `dataset = "mnist"`,
//! `layout = [784, 10, 10]`, `runs = 50`, `epochs = 25`, `skip_epochs = 5`,
//! `record_every = 10`, `optimizer = "sgd"`, `lr = 0.1`, `momentum = 0.9`,
//! `weight_decay = 1e-5`.
//!
//! Outputs: `weights.safetensors` (every record, run order, with `run`/`epoch`/`step`
//! columns) and the table `runs` (final train/val/test loss and accuracy per run).

use super::{check_layout_fits, dataset_param, int_list, layout_param, load_dataset, row, split_seed, write_weights};
use crate::collect::{collect, Checkpoints, CollectConfig, RunMetrics};
use crate::data::{mnist, uci, DatasetName, TrainingSplit};
use crate::kind::{NetworkColumns, TableDecl, ParamSpec, ParamType, Params, Resources, StageContext, StageError, StageKind, Value};
use crate::mlp::{train::batches_per_epoch, OptimizerKind, RecordRule, TrainConfig};

pub struct Collect;

impl Collect {
    fn config(params: &Params, seed: u64) -> Result<CollectConfig, StageError> {
        let layout = layout_param(params, "layout")?;
        let optimizer = super::optimizer_param(params)?;
        Ok(CollectConfig {
            layout,
            runs: params.usize("runs")?,
            train: TrainConfig { epochs: params.usize("epochs")?, batch_size: params.usize("batch_size")?, optimizer },
            record: RecordRule { skip_epochs: params.usize("skip_epochs")?, every: params.usize("record_every")? },
            eval_batch: params.usize("eval_batch")?,
            seed,
        })
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
        let positive = ParamType::Float { min: Some(f64::MIN_POSITIVE), max: None };
        vec![
            ParamSpec::required("dataset", ParamType::Enum(DatasetName::NAMES), "Base task"),
            ParamSpec::with_default("layout", ParamType::IntList, int_list(&[30, 16, 16, 2]), "MLP layer sizes [n_0, ..., n_L]"),
            ParamSpec::with_default("runs", ParamType::POSITIVE_INT, Value::Int(100), "Independent training runs"),
            ParamSpec::with_default("epochs", ParamType::POSITIVE_INT, Value::Int(50), "Epochs per run"),
            ParamSpec::with_default("skip_epochs", ParamType::NON_NEGATIVE_INT, Value::Int(10), "Epochs recorded nothing at the start"),
            ParamSpec::with_default("record_every", ParamType::POSITIVE_INT, Value::Int(4), "Record before every k-th minibatch step"),
            ParamSpec::with_default("batch_size", ParamType::POSITIVE_INT, Value::Int(64), "Training minibatch size"),
            ParamSpec::with_default("optimizer", ParamType::Enum(OptimizerKind::NAMES), Value::Str("adam".into()), "adam or sgd (PyTorch semantics)"),
            ParamSpec::with_default("lr", positive, Value::Float(1e-3), "Learning rate"),
            ParamSpec::with_default("momentum", ParamType::Float { min: Some(0.0), max: Some(1.0) }, Value::Float(0.9), "SGD momentum (SGD only)"),
            ParamSpec::with_default("weight_decay", ParamType::NON_NEGATIVE_FLOAT, Value::Float(0.0), "L2 penalty added to the gradient"),
            ParamSpec::with_default("split_seed", ParamType::NON_NEGATIVE_INT, Value::Int(42), "Seed of the train/val/test split"),
            ParamSpec::with_default("eval_batch", ParamType::POSITIVE_INT, Value::Int(64), "Batch size of the final evaluation"),
        ]
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::weights().with_network_columns(NetworkColumns::Own(&["run", "epoch", "step"])).with_tables(&[TableDecl::new(
            "runs",
            &["run", "records", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"],
        )]))
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        let dataset = dataset_param(params, "dataset")?;
        let config = Self::config(params, 0)?;
        check_layout_fits(&config.layout, dataset)?;
        if config.record.skip_epochs >= config.train.epochs {
            return Err(StageError::Param(format!(
                "skip_epochs ({}) must be below epochs ({}), or nothing is recorded",
                config.record.skip_epochs, config.train.epochs
            )));
        }
        Ok(())
    }

    fn resources(&self, params: &Params) -> Resources {
        let runs = params.usize("runs").unwrap_or(1).clamp(1, 16) as u32;
        Resources { cpus: runs.min(8), ..Resources::default() }
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let dataset = dataset_param(params, "dataset").ok()?;
        let config = Self::config(params, 0).ok()?;
        // Forward + backward ≈ 6 FLOPs per weight per row; the final evaluation 2.
        let weights = config.layout.num_weights() as f64;
        let train_rows = (Self::train_rows(dataset) * config.train.epochs) as f64;
        Some(config.runs as f64 * weights * (6.0 * train_rows + 2.0 * Self::eval_rows(dataset) as f64))
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        self.validate(ctx.params)?;
        let dataset_name = dataset_param(ctx.params, "dataset")?;
        let config = Self::config(ctx.params, ctx.seed)?;
        let dataset = load_dataset(ctx, dataset_name)?;
        let per_run = config.record.records_per_run(config.train.epochs, batches_per_epoch(dataset.train.len(), config.train.batch_size));
        tracing::info!(runs = config.runs, per_run, "collecting {} on {}", config.layout, dataset_name);
        let progress = ctx.progress;
        let checkpoints = Checkpoints::new(ctx.scratch_dir);
        let (mut weights, metrics) = collect(&config, &dataset, &checkpoints, ctx.threads, &|done, total| progress.progress(done, total, "runs"))
            .map_err(|e| StageError::Failed(e.to_string()))?;
        weights.trained_on = Some(TrainingSplit { dataset: dataset_name, split_seed: split_seed(ctx.params)? });
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
        assert!(err.contains("`momentum` must be below 1, got 1.5"), "{err}");
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
            &[("dataset", Value::Str("mnist".into())), ("layout", int_list(&[30, 16, 2]))],
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
