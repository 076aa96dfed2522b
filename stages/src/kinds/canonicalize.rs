//! `canonicalize`: remove the ReLU scaling symmetry from every network of a weight set
//! (docs/science.md section 4). `rho` is the radius of the last-layer sphere: 1 in the code and
//! every sphere operation [faithful default]; the thesis text's √C is `rho = 1.4142…` for C = 2.

use super::{read_input_weights, write_weights};
use crate::geometry::canon::canonicalize_row;
use crate::declare::{KindParams, StageRef};
use crate::kind::{ParamSpec, ParamType as T, Params, StageContext, StageError, StageKind};
use crate::kind_params;

pub struct Canonicalize;

kind_params! {
    /// The parameters of one `canonicalize` instance, declared once.
    struct Args {
        weights: StageRef = required, "Stage whose weights.safetensors to canonicalize";
        rho: f64 [T::POSITIVE_FLOAT] = default(1.0), "Radius of the last-layer sphere";
    }
}

impl StageKind for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn version(&self) -> u32 {
        1
    }

    fn about(&self) -> &'static str {
        "Rescale every hidden neuron to unit incoming norm and the last layer to radius rho"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Args::schema()
    }

    fn produces(&self, _params: &Params) -> Option<crate::kind::Produces> {
        Some(crate::kind::Produces::weights().with_network_columns(crate::kind::NetworkColumns::KeptFrom("weights")))
    }
    fn needs(&self, _param: &str, _params: &Params) -> crate::kind::Needs {
        crate::kind::Needs::Weights
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        Args::parse(params).map(|_| ())
    }

    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let rho = Args::parse(ctx.params)?.rho as f32;
        let mut set = read_input_weights(ctx, "weights")?;
        let layout = set.layout.clone();
        for theta in set.rows_mut() {
            canonicalize_row(&layout, theta, rho);
        }
        set.check_finite()?;
        set.is_canonical = true;
        write_weights(&set, ctx.out_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Value;
    use crate::kinds::{testing, toy_data::ToyData};
    use crate::weights::WeightSet;
    use std::collections::BTreeMap;

    #[test]
    fn marks_the_set_canonical_and_rejects_bad_rho() {
        let dir = testing::temp_dir("canonicalize");
        let toy = dir.join("toy");
        testing::run(&ToyData, &testing::params(&ToyData, &[("count", Value::Int(4))]), BTreeMap::new(), &toy, 1).unwrap();
        let inputs = BTreeMap::from([("weights".to_owned(), vec![testing::input(&toy, "toy-data")])]);
        let params = testing::params(&Canonicalize, &[("weights", Value::Str("toy".into()))]);
        testing::run(&Canonicalize, &params, inputs, &dir.join("canon"), 1).unwrap();
        let set = WeightSet::read(&dir.join("canon/weights.safetensors")).unwrap();
        assert!(set.is_canonical && !set.is_aligned);
        let last = set.layout.weight_matrix(set.row(0), 3);
        assert!((last.iter().map(|v| v * v).sum::<f32>().sqrt() - 1.0).abs() < 1e-5);
        let bad = testing::params(&Canonicalize, &[("weights", Value::Str("toy".into())), ("rho", Value::Float(f64::NAN))]);
        assert!(Canonicalize.validate(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
