//! A trained flow as a safetensors file a Python user opens in one call: every float
//! parameter of the relational transformer under its module path (`layers.0.attn.q.weight`,
//! as a PyTorch `state_dict` names them), and `flow.json` (what the flow is and how it was
//! trained) as the `config` metadata entry.
//!
//! ```python
//! from safetensors.numpy import load_file
//! from safetensors import safe_open
//! tensors = load_file("flow.safetensors")            # name -> numpy array
//! config = json.loads(safe_open("flow.safetensors", "np").metadata()["config"])
//! ```

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::Recorder;
use burn::tensor::{backend::Backend, Tensor};

use super::train::ModelRecorder;
use super::TrainedFlow;
use crate::weights::{encode_safetensors, TensorRef};

/// The value of the `format` metadata entry.
pub const FORMAT: &str = "wfpipe-flow-v1";
/// The file name of the export.
pub const FILE_NAME: &str = "flow.safetensors";

type Cpu = burn::backend::NdArray<f32>;

/// Every float parameter of `module` with its dotted module path, in visiting order.
pub fn named_params<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Named {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Named {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let tensor = param.val();
            let shape = tensor.shape().dims::<D>().to_vec();
            let values = tensor.into_data().convert::<f32>().to_vec::<f32>().expect("f32 parameters");
            self.out.push((self.path.join("."), shape, values));
        }
    }
    let mut visitor = Named { path: Vec::new(), out: Vec::new() };
    module.visit(&mut visitor);
    visitor.out
}

/// The safetensors bytes of a flow: its `flow.json` text and `flow.mpk` record.
pub fn flow_safetensors(flow_json: &str, model: &[u8]) -> Result<Vec<u8>, String> {
    let flow: TrainedFlow = serde_json::from_str(flow_json).map_err(|e| format!("flow.json: {e}"))?;
    let device = Default::default();
    let record = ModelRecorder::default().load(model.to_vec(), &device).map_err(|e| format!("flow.mpk: {e}"))?;
    let model = flow.spec.rt.init::<Cpu>(0, &device).load_record(record);
    let params = named_params(&model);
    let tensors =
        params.iter().map(|(name, shape, values)| (name.clone(), TensorRef::F32 { shape: shape.clone(), values })).collect();
    let config = serde_json::to_string(&flow).expect("a trained flow serializes");
    let metadata = BTreeMap::from([("format".to_owned(), FORMAT.to_owned()), ("config".to_owned(), config)]);
    let mut bytes = Vec::new();
    encode_safetensors(tensors, &metadata, &mut bytes).expect("writing to memory cannot fail");
    Ok(bytes)
}
