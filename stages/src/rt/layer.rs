//! One relational-transformer layer (docs/science.md §6.5): attention with edge features
//! modulating queries, keys and values, then post-LN node and edge updates; over all `N²`
//! pairs (`[B, N, N, D]` edges) or over the kept pairs of [`super::pairs`] (`[B, M, D]`).

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{
    activation::{gelu, softmax},
    backend::Backend,
    Bool, Int, Tensor,
};

use super::dense::{dense, dense_rows};
use super::graph::index;
use super::init::{LinearInit, ParamInit};
use super::pairs::{PairGroup, Pairs};

/// Relational attention with `heads` heads of width `d / heads`.
#[derive(Module, Debug)]
pub struct RelationalAttention<B: Backend> {
    qkv_node: Linear<B>,
    qkv_edge: Linear<B>,
    proj_out: Linear<B>,
    heads: usize,
    d: usize,
}

impl<B: Backend> RelationalAttention<B> {
    fn new(init: &mut ParamInit<B>, d: usize, width: usize, heads: usize) -> Self {
        RelationalAttention {
            qkv_node: init.linear(width, 3 * d, false, LinearInit::XavierUniform),
            qkv_edge: init.linear(width, 4 * d, false, LinearInit::XavierUniform),
            proj_out: init.linear(d, width, true, LinearInit::XavierUniform),
            heads,
            d,
        }
    }

    /// # Shapes
    /// nodes `[B, N, D]`, edges `[B, N, N, D]`, `mask` `[N, N]` (true: the pair is left
    /// out of node i's softmax) → `[B, N, D]`.
    fn forward(&self, nodes: Tensor<B, 3>, edges: Tensor<B, 4>, mask: Option<&Tensor<B, 2, Bool>>) -> Tensor<B, 3> {
        let [batch, n, _] = nodes.dims();
        let (h, dh) = (self.heads, self.d / self.heads);
        // Head-major grouping: head h owns [h·3dh, (h+1)·3dh) split into q, k, v.
        let qkv = dense(&self.qkv_node, nodes).reshape([batch, n, h, 3 * dh]);
        let q = qkv.clone().narrow(3, 0, dh).reshape([batch, n, 1, h, dh]);
        let k = qkv.clone().narrow(3, dh, dh).reshape([batch, 1, n, h, dh]);
        let v = qkv.narrow(3, 2 * dh, dh).reshape([batch, 1, n, h, dh]);
        let e = dense(&self.qkv_edge, edges).reshape([batch, n, n, h, 4 * dh]);
        let eq = e.clone().narrow(4, 0, dh);
        let ek = e.clone().narrow(4, dh, dh);
        let ev = e.clone().narrow(4, 2 * dh, dh);
        let em = e.narrow(4, 3 * dh, dh);
        let q = eq + q; // q_ij = Qn_i + Eq_ij
        let k = ek + k; // k_ij = Kn_j + Ek_ij
        let v = v * em + ev; // v_ij = Vn_j ⊙ Em_ij + Ev_ij
        // The scale uses the full d, as the code does.
        let mut logits = (q * k).sum_dim(4) / (self.d as f64).sqrt(); // [B, N, N, H, 1]
        if let Some(mask) = mask {
            logits = logits.mask_fill(mask.clone().reshape([1, n, n, 1, 1]).expand([batch, n, n, h, 1]), MASKED_LOGIT);
        }
        let alpha = softmax(logits, 2);
        let out = (alpha * v).sum_dim(2); // [B, N, 1, H, dh]
        dense(&self.proj_out, out.reshape([batch, n, self.d]))
    }

    /// The same attention over the kept pairs only: node i's softmax runs over its pairs
    /// `(i, ·)`. Each [`PairGroup`]'s pairs form a `[nodes, per_node]` block, so the
    /// softmax is a reshape, not a scatter.
    ///
    /// # Shapes
    /// nodes `[B, N, D]`, edges `[B, M, D]` → `[B, N, D]`.
    fn forward_pairs(&self, nodes: Tensor<B, 3>, edges: Tensor<B, 3>, pairs: &PairIndex<B>) -> Tensor<B, 3> {
        let [batch, n, _] = nodes.dims();
        let m = edges.dims()[1];
        let (h, dh) = (self.heads, self.d / self.heads);
        let qkv = dense(&self.qkv_node, nodes).reshape([batch, n, h, 3 * dh]);
        let qn = qkv.clone().narrow(3, 0, dh).reshape([batch, n, h * dh]);
        let kn = qkv.clone().narrow(3, dh, dh).reshape([batch, n, h * dh]);
        let vn = qkv.narrow(3, 2 * dh, dh).reshape([batch, n, h * dh]);
        let e = dense(&self.qkv_edge, edges).reshape([batch, m, h, 4 * dh]);
        let part = |k: usize| e.clone().narrow(3, k * dh, dh);
        let q = part(0) + qn.select(1, pairs.source.clone()).reshape([batch, m, h, dh]);
        let k = part(1) + kn.select(1, pairs.target.clone()).reshape([batch, m, h, dh]);
        let v = vn.select(1, pairs.target.clone()).reshape([batch, m, h, dh]) * part(3) + part(2);
        let logits = (q * k).sum_dim(3) / (self.d as f64).sqrt(); // [B, M, H, 1]
        let out = pairs
            .groups
            .iter()
            .map(|g| {
                let at = pairs.row_start[g.first];
                let rows = at..at + g.nodes * g.per_node;
                let logits = logits.clone().slice([0..batch, rows.clone(), 0..h, 0..1]).reshape([batch, g.nodes, g.per_node, h, 1]);
                let v = v.clone().slice([0..batch, rows, 0..h, 0..dh]).reshape([batch, g.nodes, g.per_node, h, dh]);
                (softmax(logits, 2) * v).sum_dim(2).reshape([batch, g.nodes, self.d])
            })
            .collect();
        dense(&self.proj_out, Tensor::cat(out, 1))
    }
}

/// The logit of a masked pair: its softmax weight is exactly 0 (exp underflows) without
/// the infinities of −∞.
const MASKED_LOGIT: f32 = -1e30;

/// The kept pairs' index tables as tensors, built once per forward pass.
pub struct PairIndex<B: Backend> {
    pub source: Tensor<B, 1, Int>,
    pub target: Tensor<B, 1, Int>,
    pub reverse: Tensor<B, 1, Int>,
    pub row_start: Vec<usize>,
    pub groups: Vec<PairGroup>,
}

impl<B: Backend> PairIndex<B> {
    pub fn new(pairs: &Pairs, device: &B::Device) -> Self {
        PairIndex {
            source: index(&pairs.source, device),
            target: index(&pairs.target, device),
            reverse: index(&pairs.reverse, device),
            row_start: pairs.row_start.iter().map(|&r| r as usize).collect(),
            groups: pairs.groups.clone(),
        }
    }
}

/// `Lin(d→D)(GELU(Lin_noBias(D→d)(x)))`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    lin0: Linear<B>,
    lin1: Linear<B>,
}

impl<B: Backend> FeedForward<B> {
    fn new(init: &mut ParamInit<B>, d: usize, width: usize) -> Self {
        FeedForward {
            lin0: init.linear(width, d, false, LinearInit::XavierUniform),
            lin1: init.linear(d, width, true, LinearInit::XavierUniform),
        }
    }

    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        dense(&self.lin1, gelu(dense(&self.lin0, x)))
    }
}

/// The message `m_ij` from `[E_ij ; E_ji]`, `X_i` and `X_j`.
#[derive(Module, Debug)]
pub struct EdgeMessage<B: Backend> {
    lin0_e: Linear<B>,
    lin0_s: Linear<B>,
    lin0_t: Linear<B>,
    lin1: Linear<B>,
}

impl<B: Backend> EdgeMessage<B> {
    fn new(init: &mut ParamInit<B>, d: usize, width: usize) -> Self {
        EdgeMessage {
            lin0_e: init.linear(2 * width, d, true, LinearInit::XavierUniform),
            lin0_s: init.linear(width, d, true, LinearInit::XavierUniform),
            lin0_t: init.linear(width, d, true, LinearInit::XavierUniform),
            lin1: init.linear(d, width, true, LinearInit::XavierUniform),
        }
    }

    /// # Shapes
    /// nodes `[B, N, D]`, edges `[B, N, N, D]` → `[B, N, N, D]`.
    fn forward(&self, nodes: Tensor<B, 3>, edges: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, n, _] = nodes.dims();
        let d = self.lin1.weight.dims()[0];
        let width = edges.dims()[3];
        // lin0_e([E_ij ; E_ji]) = E_ij·W_top + E_ji·W_bottom + b, without materializing the
        // [B, N, N, 2D] concatenation.
        let bias = self.lin0_e.bias.as_ref().map(|b| b.val().reshape([1, 1, 1, d]));
        let forward = dense_rows(&self.lin0_e, edges.clone(), 0..width);
        let backward = dense_rows(&self.lin0_e, edges, width..2 * width).swap_dims(1, 2);
        let mut pair = forward + backward;
        if let Some(bias) = bias {
            pair = pair + bias;
        }
        let source = dense(&self.lin0_s, nodes.clone()).reshape([batch, n, 1, d]); // X_i
        let target = dense(&self.lin0_t, nodes).reshape([batch, 1, n, d]); // X_j
        dense(&self.lin1, gelu(pair + source + target))
    }

    /// # Shapes
    /// nodes `[B, N, D]`, kept-pair edges `[B, M, D]` → `[B, M, D]`.
    fn forward_pairs(&self, nodes: Tensor<B, 3>, edges: Tensor<B, 3>, pairs: &PairIndex<B>) -> Tensor<B, 3> {
        let width = edges.dims()[2];
        let forward = dense_rows(&self.lin0_e, edges.clone(), 0..width);
        let backward = dense_rows(&self.lin0_e, edges, width..2 * width).select(1, pairs.reverse.clone()); // E_ji
        let mut pair = forward + backward;
        if let Some(bias) = &self.lin0_e.bias {
            pair = pair + bias.val().unsqueeze::<3>();
        }
        let source = dense(&self.lin0_s, nodes.clone()).select(1, pairs.source.clone()); // X_i
        let target = dense(&self.lin0_t, nodes).select(1, pairs.target.clone()); // X_j
        dense(&self.lin1, gelu(pair + source + target))
    }
}

/// Attention, node update and edge update, each with a post-LayerNorm residual.
#[derive(Module, Debug)]
pub struct RtLayer<B: Backend> {
    attention: RelationalAttention<B>,
    lin0: Linear<B>,
    ln_n0: LayerNorm<B>,
    node_mlp: FeedForward<B>,
    ln_n1: LayerNorm<B>,
    edge_message: EdgeMessage<B>,
    ln_e0: LayerNorm<B>,
    edge_mlp: FeedForward<B>,
    ln_e1: LayerNorm<B>,
}

impl<B: Backend> RtLayer<B> {
    pub fn new(init: &mut ParamInit<B>, d: usize, heads: usize) -> Self {
        let width = d + 1;
        RtLayer {
            attention: RelationalAttention::new(init, d, width, heads),
            lin0: init.linear(width, width, true, LinearInit::XavierUniform),
            ln_n0: init.layer_norm(width),
            node_mlp: FeedForward::new(init, d, width),
            ln_n1: init.layer_norm(width),
            edge_message: EdgeMessage::new(init, d, width),
            ln_e0: init.layer_norm(width),
            edge_mlp: FeedForward::new(init, d, width),
            ln_e1: init.layer_norm(width),
        }
    }

    /// # Shapes
    /// nodes `[B, N, D]`, edges `[B, N, N, D]`, `mask` as in the attention → the same
    /// shapes.
    pub fn forward(&self, nodes: Tensor<B, 3>, edges: Tensor<B, 4>, mask: Option<&Tensor<B, 2, Bool>>) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let attended = self.attention.forward(nodes.clone(), edges.clone(), mask);
        let nodes = self.node_update(nodes, attended);
        let message = self.edge_message.forward(nodes.clone(), edges.clone());
        (nodes, self.edge_update(edges, message))
    }

    /// The same layer over the kept pairs: nodes `[B, N, D]`, edges `[B, M, D]`.
    pub fn forward_pairs(&self, nodes: Tensor<B, 3>, edges: Tensor<B, 3>, pairs: &PairIndex<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let attended = self.attention.forward_pairs(nodes.clone(), edges.clone(), pairs);
        let nodes = self.node_update(nodes, attended);
        let message = self.edge_message.forward_pairs(nodes.clone(), edges.clone(), pairs);
        (nodes, self.edge_update(edges, message))
    }

    fn node_update(&self, nodes: Tensor<B, 3>, attended: Tensor<B, 3>) -> Tensor<B, 3> {
        let nodes = self.ln_n0.forward(nodes + dense(&self.lin0, attended));
        self.ln_n1.forward(nodes.clone() + self.node_mlp.forward(nodes))
    }

    fn edge_update<const D: usize>(&self, edges: Tensor<B, D>, message: Tensor<B, D>) -> Tensor<B, D> {
        let edges = self.ln_e0.forward(edges + message);
        self.ln_e1.forward(edges.clone() + self.edge_mlp.forward(edges))
    }
}
