//! `align`: permute every network of a weight set to match one reference network of the set
//! (docs/science.md section 3). Default: exact weight matching (3.2) to stored index 256
//! [recommended]; the code's Sinkhorn re-basin with L2, midpoint or random-interpolation
//! objectives (3.1, 3.3) is `method = "sinkhorn-l2" | "sinkhorn-mid" | "sinkhorn-rnd"`, and
//! `reference = 0` is the code's `align_to_ref`.
//!
//! Outputs: `weights.safetensors` (aligned, same order and columns), `permutations.safetensors`
//! (`sigma_<l>`: `[count, n_l]` i64 per hidden layer `l`; aligned neuron `r` is original neuron
//! `sigma_l[i, r]`), and the table `alignment` (mean squared L2 distance to the reference before
//! and after, share of networks changed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::backend::{Autodiff, NdArray};
use rayon::prelude::*;

use super::{read_input_weights, row, split_seed, thread_pool, write_weights};
use crate::align::sinkhorn::{sinkhorn_rebasin, SinkhornConfig};
use crate::align::{l2_distance_sq, weight_matching::weight_matching, AlignMethod, Permutations};
use crate::data::{self, DatasetName, SplitName};
use crate::kind::{NetworkColumns, TableDecl, ParamSpec, ParamType, Params, RefMode, Resources, StageContext, StageError, StageKind, Value};
use crate::layout::Layout;
use crate::rng;
use crate::weights::{encode_safetensors, layout_json, write_atomic, TensorRef};

pub struct Align;

/// `dataset` words: the data objectives need one; the others take `none`.

impl Align {
    fn method(params: &Params) -> Result<AlignMethod, StageError> {
        params.parse("method")
    }

    fn dataset(params: &Params) -> Result<Option<DatasetName>, StageError> {
        match params.str("dataset")? {
            "none" => Ok(None),
            other => other.parse().map(Some).map_err(|e: String| StageError::Param(format!("`dataset`: {e}"))),
        }
    }

    fn sinkhorn_config(params: &Params, method: AlignMethod) -> Result<Option<SinkhornConfig>, StageError> {
        let Some(objective) = method.sinkhorn_objective() else { return Ok(None) };
        Ok(Some(SinkhornConfig {
            objective,
            iterations: params.usize("iterations")?,
            lr: params.f64("lr")?,
            batches_per_iteration: params.usize("batches_per_iteration")?,
            batch_size: params.usize("batch_size")?,
            ..SinkhornConfig::default()
        }))
    }
}

impl StageKind for Align {
    fn name(&self) -> &'static str {
        "align"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Permutation-align a weight set to one of its networks (weight matching or Sinkhorn re-basin)"
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("weights", ParamType::Ref { mode: RefMode::FanOut }, "Stage whose weights.safetensors to align"),
            ParamSpec::with_default("method", ParamType::Enum(AlignMethod::NAMES), Value::Str("weight-matching".into()), "Alignment algorithm"),
            ParamSpec::with_default("reference", ParamType::NON_NEGATIVE_INT, Value::Int(256), "Index of the reference network in the set"),
            ParamSpec::with_default("iterations", ParamType::POSITIVE_INT, Value::Int(1000), "Sinkhorn methods: Adam iterations on Q"),
            ParamSpec::with_default("lr", ParamType::Float { min: Some(f64::MIN_POSITIVE), max: None }, Value::Float(0.1), "Sinkhorn methods: Adam learning rate"),
            ParamSpec::with_default("dataset", ParamType::Enum(crate::data::DatasetName::OR_NONE), Value::Str("none".into()), "Data objectives: base task"),
            ParamSpec::with_default("data_split", ParamType::Enum(SplitName::NAMES), Value::Str("train".into()), "Data objectives: split to estimate the loss on (the code used test)"),
            ParamSpec::with_default("batches_per_iteration", ParamType::POSITIVE_INT, Value::Int(25), "Data objectives: minibatches (Adam steps) per iteration"),
            ParamSpec::with_default("batch_size", ParamType::POSITIVE_INT, Value::Int(64), "Data objectives: minibatch size"),
            ParamSpec::with_default("split_seed", ParamType::NON_NEGATIVE_INT, Value::Int(42), "Seed of the train/val/test split"),
            ParamSpec::with_default("chunk", ParamType::POSITIVE_INT, Value::Int(256), "Sinkhorn methods: networks optimized together"),
        ]
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(
            crate::kind::Produces::weights()
                .with_network_columns(NetworkColumns::KeptFrom("weights"))
                .with_tables(&[TableDecl::new("alignment", &["method", "reference", "networks", "changed", "mean_l2_sq_before", "mean_l2_sq_after"])]),
        )
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Weights
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        let method = Self::method(params)?;
        let dataset = Self::dataset(params)?;
        params.parse::<SplitName>("data_split")?;
        if matches!(method, AlignMethod::SinkhornMid | AlignMethod::SinkhornRnd) && dataset.is_none() {
            return Err(StageError::Param(format!("method `{method}` needs `dataset` (its loss is computed on data)")));
        }
        Ok(())
    }

    fn resources(&self, _params: &Params) -> Resources {
        Resources { cpus: 2, ..Resources::default() }
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        self.validate(ctx.params)?;
        let method = Self::method(ctx.params)?;
        let set = read_input_weights(ctx, "weights")?;
        let reference = ctx.params.usize("reference")?;
        if reference >= set.count {
            return Err(StageError::Param(format!(
                "reference index {reference} is out of range: the input set has {} networks (0..{})",
                set.count,
                set.count - 1
            )));
        }
        let layout = set.layout.clone();
        let reference_theta = set.row(reference).to_vec();
        let pool = thread_pool(ctx.threads)?;
        let total = set.count as u64;
        let done = AtomicU64::new(0);
        let progress = ctx.progress;
        let seed = ctx.seed;

        let perms: Vec<Permutations> = match method {
            AlignMethod::None => vec![Permutations::identity(&layout); set.count],
            AlignMethod::WeightMatching => pool.install(|| {
                (0..set.count)
                    .into_par_iter()
                    .map(|i| {
                        let mut order = rng::stream(seed, "align layer order", i as u64);
                        let m = weight_matching(&layout, &reference_theta, set.row(i), &mut order);
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n % 1000 == 0 || n == total {
                            progress.progress(n, total, "networks");
                        }
                        m.perms
                    })
                    .collect()
            }),
            _ => {
                let config = Self::sinkhorn_config(ctx.params, method)?.expect("Sinkhorn methods have a config");
                let data = match Self::dataset(ctx.params)? {
                    Some(name) if config.objective != crate::align::sinkhorn::Objective::L2 => {
                        let dataset = data::load(name, ctx.data_dir, split_seed(ctx.params)?)?;
                        if dataset.inputs() != layout.inputs() {
                            return Err(StageError::Param(format!("layout {layout} does not fit dataset {name}")));
                        }
                        Some(dataset.split(ctx.params.parse("data_split")?).clone())
                    }
                    _ => None,
                };
                let chunk = ctx.params.usize("chunk")?;
                let device = Default::default();
                let mut perms = Vec::with_capacity(set.count);
                for (c, start) in (0..set.count).step_by(chunk).enumerate() {
                    let rows: Vec<&[f32]> = (start..(start + chunk).min(set.count)).map(|i| set.row(i)).collect();
                    let mut r = rng::stream(seed, "align sinkhorn", c as u64);
                    perms.extend(pool.install(|| {
                        sinkhorn_rebasin::<Autodiff<NdArray<f32>>>(&layout, &reference_theta, &rows, &config, data.as_ref(), &mut r, &device)
                    }));
                    progress.progress(perms.len() as u64, total, "networks");
                }
                perms
            }
        };

        let mut aligned = set.clone();
        let (mut before, mut after, mut changed) = (0.0, 0.0, 0usize);
        for (i, p) in perms.iter().enumerate() {
            let permuted = p.apply(&layout, set.row(i));
            before += l2_distance_sq(&reference_theta, set.row(i));
            after += l2_distance_sq(&reference_theta, &permuted);
            changed += usize::from(!p.is_identity());
            aligned.row_mut(i).copy_from_slice(&permuted);
        }
        aligned.is_aligned = method != AlignMethod::None;
        write_weights(&aligned, ctx.out_dir)?;
        write_permutations(&ctx.out_dir.join("permutations.safetensors"), &layout, reference, &perms)?;

        let n = set.count as f64;
        ctx.progress.metric("l2_sq_before", before / n);
        ctx.progress.metric("l2_sq_after", after / n);
        ctx.emit_rows(
            "alignment",
            [row([
                ("method", Value::Str(method.to_string())),
                ("reference", Value::Int(reference as i64)),
                ("networks", Value::Int(set.count as i64)),
                ("changed", Value::Int(changed as i64)),
                ("mean_l2_sq_before", Value::Float(before / n)),
                ("mean_l2_sq_after", Value::Float(after / n)),
            ])],
        );
        Ok(())
    }
}

/// `sigma_<l>` tensors `[count, n_l]` (i64), one per hidden layer.
fn write_permutations(path: &std::path::Path, layout: &Layout, reference: usize, perms: &[Permutations]) -> Result<(), StageError> {
    let hidden: Vec<usize> = (1..layout.num_layers()).collect();
    let flat: Vec<Vec<i64>> = hidden
        .iter()
        .map(|&l| perms.iter().flat_map(|p| p.sigma[l - 1].iter().map(|&s| s as i64)).collect())
        .collect();
    let tensors: Vec<(String, TensorRef<'_>)> = hidden
        .iter()
        .zip(&flat)
        .map(|(&l, values)| (format!("sigma_{l}"), TensorRef::I64 { shape: vec![perms.len(), layout.sizes()[l]], values }))
        .collect();
    let metadata = BTreeMap::from([
        ("format".to_owned(), "wfpipe-permutations-v1".to_owned()),
        ("layout".to_owned(), layout_json(layout)),
        ("reference".to_owned(), reference.to_string()),
    ]);
    // A layout without hidden layers gives a file with metadata only.
    Ok(write_atomic(path, |w| encode_safetensors(tensors, &metadata, w))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::uci;
    use crate::kinds::collect::Collect;
    use crate::kinds::testing;
    use crate::mlp::forward;
    use crate::weights::WeightSet;

    fn collected(dir: &std::path::Path) -> std::path::PathBuf {
        let out = dir.join("collect");
        let params = testing::params(
            &Collect,
            &[("dataset", Value::Str("uci-wdbc".into())), ("runs", Value::Int(4)), ("epochs", Value::Int(3)), ("skip_epochs", Value::Int(2))],
        );
        testing::run(&Collect, &params, BTreeMap::new(), &out, 5).unwrap();
        out
    }

    #[test]
    fn aligned_networks_compute_the_same_function_and_move_closer() {
        let dir = testing::temp_dir("align");
        let upstream = collected(&dir);
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&upstream, "collect")])]);
        let params = testing::params(&Align, &[("weights", Value::Str("collect".into())), ("reference", Value::Int(3))]);
        let tables = testing::run(&Align, &params, inputs, &dir.join("align"), 1).unwrap();
        let raw = WeightSet::read(&upstream.join("weights.safetensors")).unwrap();
        let aligned = WeightSet::read(&dir.join("align/weights.safetensors")).unwrap();
        assert!(aligned.is_aligned);
        assert_eq!(aligned.columns, raw.columns);
        assert_eq!(aligned.row(3), raw.row(3), "the reference aligns to itself");
        let test = uci::load(42).test;
        for i in 0..raw.count {
            let a = forward(&raw.layout, raw.row(i), &test.x, test.len());
            let b = forward(&raw.layout, aligned.row(i), &test.x, test.len());
            let diff = a.iter().zip(&b).map(|(u, v)| (u - v).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "network {i}: max logit difference {diff}");
            assert!(l2_distance_sq(raw.row(3), aligned.row(i)) <= l2_distance_sq(raw.row(3), raw.row(i)) + 1e-9);
        }
        let summary = &tables["alignment"][0];
        assert!(summary["mean_l2_sq_after"].as_f64().unwrap() < summary["mean_l2_sq_before"].as_f64().unwrap());
        let perms = std::fs::read(dir.join("align/permutations.safetensors")).unwrap();
        let parsed = safetensors::SafeTensors::deserialize(&perms).unwrap();
        assert_eq!(parsed.tensor("sigma_1").unwrap().shape(), &[raw.count, 16]);
        assert_eq!(parsed.tensor("sigma_2").unwrap().shape(), &[raw.count, 16]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_reference_and_missing_dataset_are_clear_errors() {
        let dir = testing::temp_dir("align-bad");
        let upstream = collected(&dir);
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&upstream, "collect")])]);
        let params = testing::params(&Align, &[("weights", Value::Str("collect".into()))]);
        let err = testing::run(&Align, &params, inputs, &dir.join("align"), 1).unwrap_err().to_string();
        assert!(err.contains("reference index 256 is out of range: the input set has 8 networks"), "{err}");
        let mid = testing::params(&Align, &[("weights", Value::Str("c".into())), ("method", Value::Str("sinkhorn-mid".into()))]);
        assert!(Align.validate(&mid).unwrap_err().to_string().contains("needs `dataset`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
