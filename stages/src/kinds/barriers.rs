//! `barriers`: pairwise midpoint losses over a seeded random subset of a weight set
//! (docs/science.md 3.4, Fig. 7.2), absolute `L((θ_a+θ_b)/2)` and relative
//! `mid − (L(θ_a)+L(θ_b))/2`. With `aligned` set, the same subset (same indices) of a second
//! set, normally the `align` output of the first, is measured too: before vs after alignment.
//!
//! Tables: `barriers` (per set and variant: mean, std and count over the pairs a < b for
//! `absolute`/`relative`, over the networks for `endpoint-loss`/`endpoint-accuracy`) and
//! `barrier_pairs` (one row per pair and set).

use rand::seq::SliceRandom;

use super::{check_layout_fits, load_dataset, row, thread_pool};
use crate::align::barrier::{pairwise_midpoint_losses, BarrierMatrix};
use crate::data::{DatasetName, SplitName, DEFAULT_SPLIT_SEED};
use crate::declare::{KindParams, StageRef};
use crate::kind::{ParamSpec, ParamType as T, Params, Row, StageContext, StageError, StageKind, TableDecl, Value};
use crate::kind_params;
use crate::rng;
use crate::stats::MeanStd;
use crate::weights::{WeightSet, FILE_NAME};

pub struct Barriers;

kind_params! {
    /// The parameters of one `barriers` instance, declared once (docs/science.md 3.4).
    struct Args {
        weights: StageRef = required, "Stage whose weights.safetensors to measure";
        aligned: StageRef = default(StageRef::NONE), "Optional second stage with the same networks aligned (same order)";
        dataset: DatasetName = required, "Base task of the networks";
        count: usize [T::Int { min: Some(2), max: None }] = default(250), "Networks drawn at random";
        split: SplitName = default(SplitName::Test), "Split the loss is computed on";
        split_seed: u64 = default(DEFAULT_SPLIT_SEED), "Seed of the train/val/test split";
        eval_batch: usize [T::POSITIVE_INT] = default(64), "Batch size of the loss (per-batch averaging)";
    }
}

fn summary_rows(set: &str, m: &BarrierMatrix) -> Vec<Row> {
    [
        ("absolute", m.absolute_summary()),
        ("relative", m.relative_summary()),
        ("endpoint-loss", MeanStd::of(m.endpoint_loss.iter().copied()).unwrap_or(MeanStd::EMPTY)),
        ("endpoint-accuracy", MeanStd::of(m.endpoint_accuracy.iter().copied()).unwrap_or(MeanStd::EMPTY)),
    ]
    .into_iter()
        .map(|(variant, s)| {
            row([
                ("set", Value::Str(set.into())),
                ("variant", Value::Str(variant.into())),
                ("mean", Value::Float(s.mean)),
                ("std", Value::Float(s.std)),
                ("count", Value::Int(s.count as i64)),
            ])
        })
        .collect()
}

fn pair_rows(set: &str, indices: &[usize], m: &BarrierMatrix) -> Vec<Row> {
    let mut rows = Vec::with_capacity(m.size * m.size.saturating_sub(1) / 2);
    for a in 0..m.size {
        for b in a + 1..m.size {
            rows.push(row([
                ("set", Value::Str(set.into())),
                ("a", Value::Int(indices[a] as i64)),
                ("b", Value::Int(indices[b] as i64)),
                ("mid_loss", Value::Float(m.absolute(a, b))),
                ("barrier", Value::Float(m.relative(a, b))),
            ]));
        }
    }
    rows
}

impl StageKind for Barriers {
    fn name(&self) -> &'static str {
        "barriers"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Pairwise midpoint losses (loss barriers) over a random subset, optionally before and after alignment"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::tables(&[
            TableDecl::new("barriers", &["set", "variant", "mean", "std", "count"]),
            TableDecl::new("barrier_pairs", &["set", "a", "b", "mid_loss", "barrier"]),
        ]))
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Weights
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        Args::parse(params).map(|_| ())
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        // The layout is only known from the input; assume the thesis layout of the dataset
        // (P_W = 768 for UCI, 7,940 for MNIST) and the test split, 2 FLOPs per weight per row.
        let a = Args::parse(params).ok()?;
        let count = a.count as f64;
        let (rows, weights) = match a.dataset {
            DatasetName::UciWdbc => (57.0, 768.0),
            DatasetName::Mnist | DatasetName::FashionMnist => (5_000.0, 7_940.0),
        };
        let sets = if a.aligned.is_set() { 2.0 } else { 1.0 };
        Some(sets * count * (count + 1.0) / 2.0 * rows * 2.0 * weights)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let a = Args::parse(ctx.params)?;
        let dataset_name = a.dataset;
        let raw = WeightSet::read(&ctx.input("weights")?.file(FILE_NAME))?;
        check_layout_fits(&raw.layout, dataset_name)?;
        let aligned = match ctx.optional_input("aligned")? {
            None => None,
            Some(one) => {
                let set = WeightSet::read(&one.file(FILE_NAME))?;
                set.expect_layout(&raw.layout)?;
                if set.count != raw.count {
                    return Err(StageError::Input(format!(
                        "`aligned` holds {} networks but `weights` holds {}: they must be the same networks in the same order",
                        set.count, raw.count
                    )));
                }
                Some(set)
            }
        };
        let count = a.count;
        if count > raw.count {
            return Err(StageError::Param(format!("count {count} exceeds the {} networks in the set", raw.count)));
        }
        let mut indices: Vec<usize> = (0..raw.count).collect();
        indices.shuffle(&mut rng::stream(ctx.seed, "barrier subset", 0));
        indices.truncate(count);

        let dataset = load_dataset(ctx, dataset_name, a.split_seed)?;
        let split = dataset.split(a.split);
        let batch = a.eval_batch;
        let pool = thread_pool(ctx.threads)?;
        let measure = |set: &WeightSet| {
            let rows: Vec<&[f32]> = indices.iter().map(|&i| set.row(i)).collect();
            pool.install(|| pairwise_midpoint_losses(&set.layout, &rows, split, batch))
        };

        let mut summaries = Vec::new();
        let mut pairs = Vec::new();
        let sets: Vec<(&str, &WeightSet)> = std::iter::once(("raw", &raw)).chain(aligned.as_ref().map(|s| ("aligned", s))).collect();
        for (done, (name, set)) in sets.iter().enumerate() {
            let m = measure(set);
            ctx.progress.metric(&format!("{name}_mid_loss_mean"), m.absolute_summary().mean);
            ctx.progress.metric(&format!("{name}_barrier_mean"), m.relative_summary().mean);
            summaries.extend(summary_rows(name, &m));
            pairs.extend(pair_rows(name, &indices, &m));
            ctx.progress.progress(done as u64 + 1, sets.len() as u64, "sets");
        }
        ctx.emit_rows("barriers", summaries);
        ctx.emit_rows("barrier_pairs", pairs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{align::Align, collect::Collect, testing};
    use std::collections::BTreeMap;

    /// docs/science.md Appendix A item 9, at test scale: aligned barriers are markedly lower.
    #[test]
    fn alignment_lowers_uci_barriers() {
        let dir = testing::temp_dir("barriers");
        let collect = dir.join("collect");
        let params = testing::params(
            &Collect,
            &[("dataset", Value::Str("uci-wdbc".into())), ("runs", Value::Int(12)), ("epochs", Value::Int(20)), ("skip_epochs", Value::Int(19)), ("record_every", Value::Int(8))],
        );
        testing::run(&Collect, &params, BTreeMap::new(), &collect, 11).unwrap();
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&collect, "collect")])]);
        let align = dir.join("align");
        testing::run(&Align, &testing::params(&Align, &[("weights", Value::Str("c".into())), ("reference", Value::Int(0))]), inputs.clone(), &align, 1).unwrap();
        let mut both = inputs;
        both.insert("aligned".into(), vec![testing::input(&align, "align")]);
        let params = testing::params(
            &Barriers,
            &[("weights", Value::Str("c".into())), ("aligned", Value::Str("a".into())), ("dataset", Value::Str("uci-wdbc".into())), ("count", Value::Int(12))],
        );
        let tables = testing::run(&Barriers, &params, both, &dir.join("barriers"), 2).unwrap();
        let mean = |set: &str, variant: &str| {
            tables["barriers"]
                .iter()
                .find(|r| r["set"].as_str() == Some(set) && r["variant"].as_str() == Some(variant))
                .and_then(|r| r["mean"].as_f64())
                .unwrap()
        };
        assert_eq!(tables["barrier_pairs"].len(), 2 * 66);
        let (raw, aligned) = (mean("raw", "relative"), mean("aligned", "relative"));
        assert!(aligned < 0.5 * raw, "relative barrier {raw} -> {aligned}");
        assert!(mean("aligned", "absolute") < mean("raw", "absolute"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_many_networks_is_a_clear_error() {
        let dir = testing::temp_dir("barriers-bad");
        let toy = dir.join("toy");
        let toy_params = testing::params(&crate::kinds::toy_data::ToyData, &[("count", Value::Int(3))]);
        testing::run(&crate::kinds::toy_data::ToyData, &toy_params, BTreeMap::new(), &toy, 1).unwrap();
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&toy, "toy-data")])]);
        let params = testing::params(&Barriers, &[("weights", Value::Str("t".into())), ("dataset", Value::Str("uci-wdbc".into()))]);
        let err = testing::run(&Barriers, &params, inputs, &dir.join("b"), 1).unwrap_err().to_string();
        assert!(err.contains("count 250 exceeds the 3 networks"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
