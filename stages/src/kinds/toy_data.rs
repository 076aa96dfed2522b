//! `toy-data`: a fixed draw from the Gaussian toy distribution of docs/science.md 1.4, as a weight
//! set of the toy layout. Defaults give the target `p1 = N(1·𝟙, I)`; `mean = 0` gives the
//! source. (The recommended toy flow draws fresh samples per batch instead; a fixed set is
//! the faithful alternative and the evaluation reference.)

use super::write_weights;
use crate::data::toy::GaussianToy;
use crate::declare::KindParams;
use crate::kind::{ParamSpec, ParamType as T, Params, StageContext, StageError, StageKind};
use crate::kind_params;
use crate::layout::Layout;
use crate::rng;
use crate::weights::WeightSet;

pub struct ToyData;

kind_params! {
    /// The parameters of one `toy-data` instance, declared once.
    struct Args {
        count: usize [T::POSITIVE_INT] = default(10_000), "Number of vectors";
        layout: Vec<usize> = default(vec![30, 16, 16, 2]), "Layout that fixes P and the graph";
        mean: f64 = default(1.0), "Mean of every coordinate";
        std: f64 [T::POSITIVE_FLOAT] = default(1.0), "Standard deviation of every coordinate";
    }
}

impl ToyData {
    fn toy(params: &Params) -> Result<(GaussianToy, usize), StageError> {
        let a = Args::parse(params)?;
        let layout = Layout::new(a.layout).map_err(|e| StageError::Param(format!("`layout`: {e}")))?;
        Ok((GaussianToy { layout, mean: a.mean as f32, std: a.std as f32 }, a.count))
    }
}

impl StageKind for ToyData {
    fn name(&self) -> &'static str {
        "toy-data"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Draw flat 'weight' vectors from the isotropic Gaussian toy N(mean·1, std²·I)"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::weights())
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        Self::toy(params).map(|_| ())
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let (toy, count) = Self::toy(params).ok()?;
        Some((count * toy.layout.num_params()) as f64 * 20.0)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let (toy, count) = Self::toy(ctx.params)?;
        let data = toy.sample(&mut rng::stream(ctx.seed, "toy-data", 0), count);
        write_weights(&WeightSet::new(toy.layout, data)?, ctx.out_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Value;
    use crate::kinds::testing;
    use std::collections::BTreeMap;

    #[test]
    fn writes_the_requested_draws() {
        let dir = testing::temp_dir("toy-data");
        let params = testing::params(&ToyData, &[("count", Value::Int(50))]);
        testing::run(&ToyData, &params, BTreeMap::new(), &dir, 1).unwrap();
        let set = WeightSet::read(&dir.join("weights.safetensors")).unwrap();
        assert_eq!((set.count, set.params()), (50, 802));
        let mean = set.data.iter().map(|&v| v as f64).sum::<f64>() / set.data.len() as f64;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
