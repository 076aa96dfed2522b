//! `toy-data`: a fixed draw from the Gaussian toy distribution of docs/science.md 1.4, as a weight
//! set of the toy layout. Defaults give the target `p1 = N(1·𝟙, I)`; `mean = 0` gives the
//! source. (The recommended toy flow draws fresh samples per batch instead; a fixed set is
//! the faithful alternative and the evaluation reference.)

use super::{int_list, layout_param, write_weights};
use crate::data::toy::GaussianToy;
use crate::kind::{ParamSpec, ParamType, Params, StageContext, StageError, StageKind, Value};
use crate::rng;
use crate::weights::WeightSet;

pub struct ToyData;

impl ToyData {
    fn toy(params: &Params) -> Result<(GaussianToy, usize), StageError> {
        let layout = layout_param(params, "layout")?;
        let toy = GaussianToy { layout, mean: params.f64("mean")? as f32, std: params.f64("std")? as f32 };
        Ok((toy, params.usize("count")?))
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
        vec![
            ParamSpec::with_default("count", ParamType::POSITIVE_INT, Value::Int(10_000), "Number of vectors"),
            ParamSpec::with_default("layout", ParamType::IntList, int_list(&[30, 16, 16, 2]), "Layout that fixes P and the graph"),
            ParamSpec::with_default("mean", ParamType::FLOAT, Value::Float(1.0), "Mean of every coordinate"),
            ParamSpec::with_default("std", ParamType::Float { min: Some(f64::MIN_POSITIVE), max: None }, Value::Float(1.0), "Standard deviation of every coordinate"),
        ]
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::weights())
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        let (toy, _) = Self::toy(params)?;
        if !toy.mean.is_finite() || !toy.std.is_finite() {
            return Err(StageError::Param("mean and std must be finite".into()));
        }
        Ok(())
    }

    fn estimate_flops(&self, params: &Params) -> Option<f64> {
        let (toy, count) = Self::toy(params).ok()?;
        Some((count * toy.layout.num_params()) as f64 * 20.0)
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        self.validate(ctx.params)?;
        let (toy, count) = Self::toy(ctx.params)?;
        let data = toy.sample(&mut rng::stream(ctx.seed, "toy-data", 0), count);
        write_weights(&WeightSet::new(toy.layout, data)?, ctx.out_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
