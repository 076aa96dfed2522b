//! Every parameter of the relational transformer in one flat `f32` arena, with the offsets
//! of each tensor, and the conversion to and from the burn module.
//!
//! The arena's order is the burn module's creation order, which is also its visiting order
//! and its parameter-id order (ids 1, 2, … from [`crate::rt::init::ParamInit`]), so one
//! walk over the module fills or reads the arena and the ids check that it matches.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::rt::model::{RelationalTransformer, RtConfig};

/// A linear layer: weight `[d_in, d_out]` (row-major, `y = x·W + b`), optional bias.
#[derive(Clone, Copy, Debug)]
pub struct Lin {
    pub w: usize,
    pub b: Option<usize>,
    pub d_in: usize,
    pub d_out: usize,
}

/// A LayerNorm's `γ` and `β` over `d` features.
#[derive(Clone, Copy, Debug)]
pub struct Norm {
    pub gamma: usize,
    pub beta: usize,
    pub d: usize,
}

/// The tensors of one RT layer (docs/science.md §6.5).
#[derive(Clone, Debug)]
pub struct LayerParams {
    pub qkv_node: Lin,
    pub qkv_edge: Lin,
    pub att_out: Lin,
    pub lin0: Lin,
    pub ln_n0: Norm,
    pub node_mlp: [Lin; 2],
    pub ln_n1: Norm,
    /// `Lin0_e(2D→d)`: rows `0..D` act on `E_ij`, rows `D..2D` on `E_ji`.
    pub msg_pair: Lin,
    pub msg_source: Lin,
    pub msg_target: Lin,
    pub msg_out: Lin,
    pub ln_e0: Norm,
    pub edge_mlp: [Lin; 2],
    pub ln_e1: Norm,
}

/// Offsets of every tensor in the arena.
#[derive(Clone, Debug)]
pub struct ParamMap {
    pub d: usize,
    /// `D = d + 1`.
    pub width: usize,
    pub heads: usize,
    pub pos_rows: usize,
    pub proj_weight: [Lin; 3],
    pub proj_bias: [Lin; 3],
    pub proj_edge_in: Lin,
    pub proj_node_in: Lin,
    /// `[R, d]` positional table.
    pub pos: usize,
    pub layers: Vec<LayerParams>,
    pub edge_head: [Lin; 3],
    pub node_head: [Lin; 3],
    pub graph_head: [Lin; 3],
    /// The readout offset `[P]`, when the model has one.
    pub offset: Option<usize>,
    /// `(offset, len)` of every tensor in creation order.
    pub tensors: Vec<(usize, usize)>,
    pub len: usize,
}

struct Alloc {
    tensors: Vec<(usize, usize)>,
    len: usize,
}

impl Alloc {
    fn take(&mut self, n: usize) -> usize {
        let at = self.len;
        self.tensors.push((at, n));
        self.len += n;
        at
    }
    fn lin(&mut self, d_in: usize, d_out: usize, bias: bool) -> Lin {
        let w = self.take(d_in * d_out);
        let b = bias.then(|| self.take(d_out));
        Lin { w, b, d_in, d_out }
    }
    fn norm(&mut self, d: usize) -> Norm {
        let gamma = self.take(d);
        let beta = self.take(d);
        Norm { gamma, beta, d }
    }
    fn mlp3(&mut self, d_in: usize, d: usize, d_out: usize) -> [Lin; 3] {
        [self.lin(d_in, d, true), self.lin(d, d, true), self.lin(d, d_out, true)]
    }
}

impl ParamMap {
    /// The map of a model built by `config.init`, in the same order.
    pub fn new(config: &RtConfig) -> Self {
        let d = config.d_model;
        let width = d + 1;
        let mut a = Alloc { tensors: Vec::new(), len: 0 };
        let proj_weight = a.mlp3(1, d, d);
        let proj_bias = a.mlp3(1, d, d);
        let proj_edge_in = a.lin(d, d, true);
        let proj_node_in = a.lin(d, d, true);
        let pos = a.take(config.pos_rows * d);
        let layers = (0..config.layers)
            .map(|_| LayerParams {
                qkv_node: a.lin(width, 3 * d, false),
                qkv_edge: a.lin(width, 4 * d, false),
                att_out: a.lin(d, width, true),
                lin0: a.lin(width, width, true),
                ln_n0: a.norm(width),
                node_mlp: [a.lin(width, d, false), a.lin(d, width, true)],
                ln_n1: a.norm(width),
                msg_pair: a.lin(2 * width, d, true),
                msg_source: a.lin(width, d, true),
                msg_target: a.lin(width, d, true),
                msg_out: a.lin(d, width, true),
                ln_e0: a.norm(width),
                edge_mlp: [a.lin(width, d, false), a.lin(d, width, true)],
                ln_e1: a.norm(width),
            })
            .collect();
        let edge_head = a.mlp3(width, d, 1);
        let node_head = a.mlp3(width, d, 1);
        let graph_head = a.mlp3(config.outputs * width, d, 1);
        let offset = (config.offsets > 0).then(|| a.take(config.offsets));
        ParamMap {
            d,
            width,
            heads: config.heads,
            pos_rows: config.pos_rows,
            proj_weight,
            proj_bias,
            proj_edge_in,
            proj_node_in,
            pos,
            layers,
            edge_head,
            node_head,
            graph_head,
            offset,
            tensors: a.tensors,
            len: a.len,
        }
    }
}

/// Copies every parameter of `model` into an arena laid out by `map`.
pub fn export<B: Backend>(model: &RelationalTransformer<B>, map: &ParamMap) -> Vec<f32> {
    struct Export<'m> {
        map: &'m ParamMap,
        out: Vec<f32>,
        next: usize,
    }
    impl<B: Backend> ModuleVisitor<B> for Export<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let (offset, len) = self.map.tensors[self.next];
            assert_eq!(param.id, (self.next as u64 + 1).into(), "parameter order differs from the arena");
            let values = param.val().into_data().convert::<f32>().to_vec::<f32>().expect("f32 parameter");
            assert_eq!(values.len(), len, "parameter {} has {} values, the arena {len}", self.next, values.len());
            self.out[offset..offset + len].copy_from_slice(&values);
            self.next += 1;
        }
    }
    let mut export = Export { map, out: vec![0.0; map.len], next: 0 };
    model.visit(&mut export);
    assert_eq!(export.next, map.tensors.len(), "model has fewer tensors than the arena");
    export.out
}

/// `model` with every parameter replaced by the arena's values (ids kept).
pub fn import<B: Backend>(model: RelationalTransformer<B>, map: &ParamMap, values: &[f32]) -> RelationalTransformer<B> {
    struct Import<'m> {
        map: &'m ParamMap,
        values: &'m [f32],
        next: usize,
    }
    impl<B: Backend> ModuleMapper<B> for Import<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (offset, len) = self.map.tensors[self.next];
            self.next += 1;
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let device = tensor.device();
            let data = TensorData::new(self.values[offset..offset + len].to_vec(), shape);
            let fresh = Tensor::<B, D>::from_data(data, &device);
            let fresh = if tensor.is_require_grad() { fresh.require_grad() } else { fresh };
            Param::from_mapped_value(id, fresh, mapper)
        }
    }
    assert_eq!(values.len(), map.len);
    let mut import = Import { map, values, next: 0 };
    model.map(&mut import)
}
