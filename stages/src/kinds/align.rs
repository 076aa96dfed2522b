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

use super::{read_input_weights, row, thread_pool, write_weights};
use crate::align::sinkhorn::{sinkhorn_rebasin, SinkhornConfig};
use crate::align::{l2_distance_sq, weight_matching::weight_matching, AlignMethod, Permutations};
use crate::data::{self, DatasetName, SplitName};
use crate::declare::{KindParams, StageRef};
use crate::kind::{NetworkColumns, ParamSpec, ParamType as T, Params, Resources, StageContext, StageError, StageKind, TableDecl, Value};
use crate::kind_params;
use crate::layout::Layout;
use crate::rng;
use crate::weights::{encode_safetensors, layout_json, write_atomic, TensorRef};

pub struct Align;

kind_params! {
    /// The parameters of one `align` instance, declared once (docs/science.md section 3).
    struct Args {
        weights: StageRef = required, "Stage whose weights.safetensors to align";
        method: AlignMethod = default(AlignMethod::WeightMatching), "Alignment algorithm";
        reference: usize = default(256), "Index of the reference network in the set";
        iterations: usize [T::POSITIVE_INT] = default(1000), "Sinkhorn methods: Adam iterations on Q";
        lr: f64 [T::POSITIVE_FLOAT] = default(0.1), "Sinkhorn methods: Adam learning rate";
        dataset: Option<DatasetName> = default(None), "Data objectives: base task";
        data_split: SplitName = default(SplitName::Train), "Data objectives: split to estimate the loss on (the code used test)";
        batches_per_iteration: usize [T::POSITIVE_INT] = default(25), "Data objectives: minibatches (Adam steps) per iteration";
        batch_size: usize [T::POSITIVE_INT] = default(64), "Data objectives: minibatch size";
        split_seed: u64 = default(data::DEFAULT_SPLIT_SEED), "Seed of the train/val/test split";
        chunk: usize [T::POSITIVE_INT] = default(256), "Sinkhorn methods: networks optimized together";
    }
}

impl Args {
    /// The parameters, with the checks that involve more than one of them.
    fn read(params: &Params) -> Result<Self, StageError> {
        let a = Args::parse(params)?;
        if matches!(a.method, AlignMethod::SinkhornMid | AlignMethod::SinkhornRnd) && a.dataset.is_none() {
            return Err(StageError::Param(format!("method `{}` needs `dataset` (its loss is computed on data)", a.method)));
        }
        Ok(a)
    }

    fn sinkhorn_config(&self) -> Option<SinkhornConfig> {
        Some(SinkhornConfig {
            objective: self.method.sinkhorn_objective()?,
            iterations: self.iterations,
            lr: self.lr,
            batches_per_iteration: self.batches_per_iteration,
            batch_size: self.batch_size,
            ..SinkhornConfig::default()
        })
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
        Args::schema()
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
        Args::read(params).map(|_| ())
    }

    fn resources(&self, _params: &Params) -> Resources {
        Resources { cpus: 2, ..Resources::default() }
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let a = Args::read(ctx.params)?;
        let (method, reference) = (a.method, a.reference);
        let set = read_input_weights(ctx, "weights")?;
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
                let config = a.sinkhorn_config().expect("Sinkhorn methods have a config");
                let data = match a.dataset {
                    Some(name) if config.objective != crate::align::sinkhorn::Objective::L2 => {
                        let dataset = data::load(name, ctx.data_dir, a.split_seed)?;
                        if dataset.inputs() != layout.inputs() {
                            return Err(StageError::Param(format!("layout {layout} does not fit dataset {name}")));
                        }
                        Some(dataset.split(a.data_split).clone())
                    }
                    _ => None,
                };
                let chunk = a.chunk;
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
