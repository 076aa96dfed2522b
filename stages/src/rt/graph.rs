//! From flat weight vectors to weight graphs (docs/science.md §6.2–6.4): dense, or over the
//! kept pairs of [`super::pairs`].
//!
//! [`GraphSpec`] holds what depends only on the layout: node and pair indices, the
//! positional-row of each node, and the time-channel masks. [`GraphConstructor`] is the
//! learned part: input projections of edge and node features and the positional table.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{activation::silu, backend::Backend, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::dense::dense;
use super::init::{LinearInit, ParamInit};
use super::pairs::{Attention, Pairs};
use crate::layout::Layout;

/// Where the time value is written in the extra channel (docs/science.md §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeChannel {
    /// The code's pattern: t on hidden/output nodes and on non-structural pairs; 1 on input
    /// nodes and on the structural (weight) edges.
    Faithful,
    /// The intended pattern: t on structural edges and hidden/output nodes, 1 elsewhere.
    WeightEdges,
    /// t on every node and every pair.
    Everywhere,
}

crate::words!(TimeChannel, "time channel", { Faithful = "faithful", WeightEdges = "weight-edges", Everywhere = "everywhere" });

/// Which positional-embedding row each node reads (`train-flow`'s `positions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// One row per input neuron, one shared by all neurons of a hidden layer, one per
    /// output neuron (the thesis): the network is equivariant under permutations of a
    /// hidden layer's neurons, and serves any hidden width.
    #[default]
    Shared,
    /// One row per node: hidden neurons are told apart by position, so the network can
    /// place each aligned neuron's own mean; tied to the training layout's widths.
    PerNeuron,
}

crate::words!(Positions, "positions", { Shared = "shared", PerNeuron = "per-neuron" });

impl Positions {
    pub fn is_shared(&self) -> bool {
        *self == Positions::Shared
    }

    /// The number of rows of the positional table for `layout`.
    pub fn rows(&self, layout: &Layout) -> usize {
        match self {
            Positions::Shared => layout.inputs() + layout.num_layers() - 1 + layout.outputs(),
            Positions::PerNeuron => layout.num_nodes(),
        }
    }

    /// The row of each node, in node order.
    pub fn node_rows(&self, layout: &Layout) -> Vec<i64> {
        let n = layout.sizes();
        let depth = layout.num_layers();
        if *self == Positions::PerNeuron {
            return (0..layout.num_nodes() as i64).collect();
        }
        let mut rows = Vec::with_capacity(layout.num_nodes());
        for l in 0..=depth {
            for b in 0..n[l] {
                let row = if l == 0 {
                    b
                } else if l < depth {
                    n[0] + l - 1
                } else {
                    n[0] + depth - 1 + b
                };
                rows.push(row as i64);
            }
        }
        rows
    }
}

/// Number of positional rows for a layout under the thesis's shared hidden rows.
pub fn positional_rows(layout: &Layout) -> usize {
    Positions::Shared.rows(layout)
}

/// One weight block's place in the `N × N` pair matrix: rows `node(l−1, ·)`, columns
/// `node(l, ·)`.
#[derive(Clone, Debug)]
pub struct BlockSpan {
    pub rows: std::ops::Range<usize>,
    pub cols: std::ops::Range<usize>,
}

/// Layout-dependent graph structure, independent of learned parameters.
#[derive(Clone, Debug)]
pub struct GraphSpec {
    pub layout: Layout,
    pub nodes: usize,
    pub blocks: Vec<BlockSpan>,
    pub attention: Attention,
    /// The pairs that carry an edge state; for dense attention all `N × N`, row-major.
    pub pairs: Pairs,
    /// Positional row of each node.
    pub pos_row: Vec<i64>,
    /// Per node: 1 where the time channel holds the constant 1 instead of t.
    pub node_fixed: Vec<f32>,
    /// Per pair (in `pairs` order): 1 where the time channel holds 1 instead of t.
    pub edge_fixed: Vec<f32>,
}

impl GraphSpec {
    pub fn new(layout: &Layout, time: TimeChannel, attention: Attention) -> Self {
        let n = layout.sizes();
        let depth = layout.num_layers();
        let nodes = layout.num_nodes();
        let blocks: Vec<BlockSpan> = (1..=depth)
            .map(|l| BlockSpan {
                rows: layout.node(l - 1, 0)..layout.node(l - 1, 0) + n[l - 1],
                cols: layout.node(l, 0)..layout.node(l, 0) + n[l],
            })
            .collect();
        let pos_row = Positions::Shared.node_rows(layout);
        let pairs = Pairs::new(layout, attention);
        let structural = (0..pairs.len()).map(|p| if pairs.is_structural(p) { 1.0f32 } else { 0.0 });
        let is_input: Vec<f32> = (0..nodes).map(|i| if i < n[0] { 1.0 } else { 0.0 }).collect();
        let (node_fixed, edge_fixed) = match time {
            TimeChannel::Faithful => (is_input, structural.collect()),
            TimeChannel::WeightEdges => (is_input, structural.map(|s| 1.0 - s).collect()),
            TimeChannel::Everywhere => (vec![0.0; nodes], vec![0.0; pairs.len()]),
        };
        GraphSpec { layout: layout.clone(), nodes, blocks, attention, pairs, pos_row, node_fixed, edge_fixed }
    }

    /// The same graph with each node reading its row under `positions`.
    pub fn with_positions(mut self, positions: Positions) -> Self {
        self.pos_row = positions.node_rows(&self.layout);
        self
    }

    /// Dense edge features `[B, N, N, 1]`: `W_l[b,a]` at pair `(node(l−1,a), node(l,b))`,
    /// zero elsewhere.
    pub fn edge_features<B: Backend>(&self, x: &Tensor<B, 2>) -> Tensor<B, 4> {
        let [batch, _] = x.dims();
        let n = self.layout.sizes();
        let mut dense = Tensor::<B, 3>::zeros([batch, self.nodes, self.nodes], &x.device());
        for (l, span) in self.blocks.iter().enumerate() {
            let off = self.layout.weight_offset(l + 1);
            let block = x
                .clone()
                .slice([0..batch, off..off + n[l] * n[l + 1]])
                .reshape([batch, n[l], n[l + 1]]);
            dense = dense.slice_assign([0..batch, span.rows.clone(), span.cols.clone()], block);
        }
        dense.reshape([batch, self.nodes, self.nodes, 1])
    }

    /// Edge features of the kept pairs `[B, M, 1]`: the weight a pair carries, or 0.
    pub fn pair_features<B: Backend>(&self, x: &Tensor<B, 2>) -> Tensor<B, 3> {
        let [batch, _] = x.dims();
        let weights = x.clone().slice([0..batch, 0..self.layout.num_weights()]);
        let zero = Tensor::<B, 2>::zeros([batch, 1], &x.device());
        let source = Tensor::cat(vec![weights, zero], 1);
        source.select(1, index(&self.pairs.weight, &x.device())).reshape([batch, self.pairs.len(), 1])
    }

    /// Node features `[B, N, 1]`: 0 for input neurons, the bias for every other neuron.
    pub fn node_features<B: Backend>(&self, x: &Tensor<B, 2>) -> Tensor<B, 3> {
        let [batch, p] = x.dims();
        let inputs = self.layout.inputs();
        let biases = x.clone().slice([0..batch, self.layout.num_weights()..p]);
        let zeros = Tensor::<B, 2>::zeros([batch, inputs], &x.device());
        Tensor::cat(vec![zeros, biases], 1).reshape([batch, self.nodes, 1])
    }

    /// Gathers the structural pairs of `[B, N, N, D]` in flat weight order: `[B, P_W, D]`.
    pub fn structural_edges<B: Backend>(&self, edges: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, _, _, width] = edges.dims();
        let parts = self
            .blocks
            .iter()
            .map(|span| {
                let count = span.rows.len() * span.cols.len();
                edges
                    .clone()
                    .slice([0..batch, span.rows.clone(), span.cols.clone(), 0..width])
                    .reshape([batch, count, width])
            })
            .collect();
        Tensor::cat(parts, 1)
    }

    /// Gathers the structural pairs of the kept-pair states `[B, M, D]`: `[B, P_W, D]`.
    pub fn structural_pairs<B: Backend>(&self, edges: Tensor<B, 3>) -> Tensor<B, 3> {
        let device = edges.device();
        edges.select(1, index(&self.pairs.structural, &device))
    }

    pub fn pos_index<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        Tensor::from_data(TensorData::new(self.pos_row.clone(), [self.nodes]), device)
    }

    /// The time channel of nodes `[B, N, 1]` and of the kept pairs `[B, M, 1]` for times
    /// `t` `[B]`.
    pub fn time_channels<B: Backend>(&self, t: &Tensor<B, 1>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [batch] = t.dims();
        let device = t.device();
        let (n, m) = (self.nodes, self.pairs.len());
        let node_fixed = Tensor::<B, 1>::from_data(TensorData::new(self.node_fixed.clone(), [n]), &device)
            .reshape([1, n, 1]);
        let edge_fixed = Tensor::<B, 1>::from_data(TensorData::new(self.edge_fixed.clone(), [m]), &device)
            .reshape([1, m, 1]);
        let t = t.clone().reshape([batch, 1, 1]);
        // fixed·1 + (1 − fixed)·t
        let nodes = (node_fixed.clone().neg() + 1.0) * t.clone() + node_fixed;
        let edges = (edge_fixed.clone().neg() + 1.0) * t + edge_fixed;
        (nodes, edges)
    }
}

/// An index table as an `Int` tensor.
pub fn index<B: Backend>(values: &[u32], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = values.iter().map(|&v| i64::from(v)).collect();
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

/// Linear(1→d) → SiLU → Linear(d→d) → SiLU → Linear(d→d).
#[derive(Module, Debug)]
pub struct ScalarEmbedding<B: Backend> {
    lin0: Linear<B>,
    lin1: Linear<B>,
    lin2: Linear<B>,
}

impl<B: Backend> ScalarEmbedding<B> {
    fn new(init: &mut ParamInit<B>, d: usize) -> Self {
        ScalarEmbedding {
            lin0: init.linear(1, d, true, LinearInit::TorchDefault),
            lin1: init.linear(d, d, true, LinearInit::TorchDefault),
            lin2: init.linear(d, d, true, LinearInit::TorchDefault),
        }
    }

    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = silu(dense(&self.lin0, x));
        let h = silu(dense(&self.lin1, h));
        dense(&self.lin2, h)
    }
}

/// Input projections and positional embeddings (the code's `GraphConstructor`).
#[derive(Module, Debug)]
pub struct GraphConstructor<B: Backend> {
    proj_weight: ScalarEmbedding<B>,
    proj_bias: ScalarEmbedding<B>,
    proj_edge_in: Linear<B>,
    proj_node_in: Linear<B>,
    /// `[R, d]`, one row per input neuron, per hidden layer and per output neuron.
    pos_embed: Param<Tensor<B, 2>>,
}

impl<B: Backend> GraphConstructor<B> {
    pub fn new(init: &mut ParamInit<B>, d: usize, pos_rows: usize) -> Self {
        GraphConstructor {
            proj_weight: ScalarEmbedding::new(init, d),
            proj_bias: ScalarEmbedding::new(init, d),
            proj_edge_in: init.linear(d, d, true, LinearInit::TorchDefault),
            proj_node_in: init.linear(d, d, true, LinearInit::TorchDefault),
            pos_embed: init.normal_table(pos_rows, d),
        }
    }

    pub fn pos_rows(&self) -> usize {
        self.pos_embed.dims()[0]
    }

    /// # Shapes
    /// `x`: `[B, P]` → nodes `[B, N, d]`, edges `[B, N, N, d]`.
    pub fn forward(&self, x: &Tensor<B, 2>, spec: &GraphSpec) -> (Tensor<B, 3>, Tensor<B, 4>) {
        (self.nodes(x, spec), self.edges(spec.edge_features(x)))
    }

    /// # Shapes
    /// `x`: `[B, P]` → nodes `[B, N, d]`, kept-pair edges `[B, M, d]`.
    pub fn forward_pairs(&self, x: &Tensor<B, 2>, spec: &GraphSpec) -> (Tensor<B, 3>, Tensor<B, 3>) {
        (self.nodes(x, spec), self.edges(spec.pair_features(x)))
    }

    fn edges<const D: usize>(&self, features: Tensor<B, D>) -> Tensor<B, D> {
        dense(&self.proj_edge_in, self.proj_weight.forward(features))
    }

    fn nodes(&self, x: &Tensor<B, 2>, spec: &GraphSpec) -> Tensor<B, 3> {
        let nodes = dense(&self.proj_node_in, self.proj_bias.forward(spec.node_features(x)));
        let [_, d] = self.pos_embed.dims();
        let pos = self.pos_embed.val().select(0, spec.pos_index::<B>(&x.device())); // [N, d]
        nodes + pos.reshape([1, spec.nodes, d])
    }
}
