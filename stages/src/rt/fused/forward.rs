//! The forward pass of one network's graph, recording what the backward pass needs.
//!
//! Per-sample buffers live in a [`Tape`] that is allocated once and reused across
//! iterations: the dense N² tensors are the bulk of the work, and allocating them afresh
//! for every operation (as a tensor library does) costs as much as computing them.

use super::kernels::{add_bias, add_in_place, gelu, gemm, layer_norm, relu, silu};
use super::params::{LayerParams, Lin, Norm, ParamMap};
use super::FusedGraph;

/// Which activation a three-layer MLP uses between its linears.
#[derive(Clone, Copy, Debug)]
pub(super) enum Act {
    Silu,
    Relu,
}

/// Saved pre-activations of `Lin → act → Lin → act → Lin` over `rows` rows.
pub(super) struct MlpTape {
    pub input: Vec<f32>,
    pub pre0: Vec<f32>,
    pub pre1: Vec<f32>,
    pub rows: usize,
}

impl MlpTape {
    fn new(rows: usize, d_in: usize, d: usize) -> Self {
        MlpTape { input: vec![0.0; rows * d_in], pre0: vec![0.0; rows * d], pre1: vec![0.0; rows * d], rows }
    }
}

pub(super) struct NormTape {
    pub xhat: Vec<f32>,
    pub rstd: Vec<f32>,
}

impl NormTape {
    fn new(rows: usize, width: usize) -> Self {
        NormTape { xhat: vec![0.0; rows * width], rstd: vec![0.0; rows] }
    }
}

/// What one RT layer saves. `x_in`/`e_in` are its inputs (the previous layer's outputs).
pub(super) struct LayerTape {
    pub x_in: Vec<f32>,
    pub e_in: Vec<f32>,
    pub qkvn: Vec<f32>,
    pub qkve: Vec<f32>,
    /// Attention weights: per node `i`, `[H, attended pairs of i]`.
    pub alpha: Vec<f32>,
    pub o: Vec<f32>,
    pub att: Vec<f32>,
    pub ln_n0: NormTape,
    pub h_n: Vec<f32>,
    pub ln_n1: NormTape,
    /// Pre-GELU edge message, `[N², d]`.
    pub a: Vec<f32>,
    pub ln_e0: NormTape,
    pub h_e: Vec<f32>,
    pub ln_e1: NormTape,
}

impl LayerTape {
    fn new(n: usize, pairs: usize, attended: usize, d: usize, w: usize, heads: usize) -> Self {
        LayerTape {
            x_in: vec![0.0; n * w],
            e_in: vec![0.0; pairs * w],
            qkvn: vec![0.0; n * 3 * d],
            qkve: vec![0.0; pairs * 4 * d],
            alpha: vec![0.0; attended * heads],
            o: vec![0.0; n * d],
            att: vec![0.0; n * w],
            ln_n0: NormTape::new(n, w),
            h_n: vec![0.0; n * d],
            ln_n1: NormTape::new(n, w),
            a: vec![0.0; pairs * d],
            ln_e0: NormTape::new(pairs, w),
            h_e: vec![0.0; pairs * d],
            ln_e1: NormTape::new(pairs, w),
        }
    }
}

/// Scratch space shared by the forward and backward passes of one sample.
pub(super) struct Work {
    pub pd0: Vec<f32>,
    pub pd1: Vec<f32>,
    pub pd2: Vec<f32>,
    pub pw0: Vec<f32>,
    pub pw1: Vec<f32>,
    pub pw2: Vec<f32>,
    pub p4d: Vec<f32>,
    pub nd0: Vec<f32>,
    pub nd1: Vec<f32>,
    pub nw0: Vec<f32>,
    pub nw1: Vec<f32>,
    pub nw2: Vec<f32>,
    pub n3d: Vec<f32>,
}

/// Everything one sample's forward pass leaves for its backward pass.
pub struct Tape {
    pub(super) edge_embed: MlpTape,
    /// Output of the edge scalar embedding, input of `proj_edge_in`, `[R_e, d]`.
    pub(super) edge_embed_out: Vec<f32>,
    pub(super) node_embed: MlpTape,
    pub(super) node_embed_out: Vec<f32>,
    pub(super) layers: Vec<LayerTape>,
    pub(super) x_final: Vec<f32>,
    pub(super) e_final: Vec<f32>,
    pub(super) edge_head: MlpTape,
    pub(super) node_head: MlpTape,
    pub(super) work: Work,
    /// `(N, pairs, attended pairs, structural edges, d, layers, heads)` this tape was sized
    /// for.
    shape: (usize, usize, usize, usize, usize, usize, usize),
}

impl Tape {
    /// Buffers for one sample of `graph` under a model of shape `map`.
    pub fn new(map: &ParamMap, graph: &FusedGraph) -> Self {
        let (n, d, w) = (graph.nodes, map.d, map.width);
        let pairs = graph.pairs;
        let distinct = graph.structural.len() + 1;
        Tape {
            edge_embed: MlpTape::new(distinct, 1, d),
            edge_embed_out: vec![0.0; distinct * d],
            node_embed: MlpTape::new(n, 1, d),
            node_embed_out: vec![0.0; n * d],
            layers: (0..map.layers.len()).map(|_| LayerTape::new(n, pairs, graph.attend.len(), d, w, map.heads)).collect(),
            x_final: vec![0.0; n * w],
            e_final: vec![0.0; pairs * w],
            edge_head: MlpTape::new(graph.structural.len(), w, d),
            node_head: MlpTape::new(n - graph.inputs, w, d),
            work: Work {
                pd0: vec![0.0; pairs * d],
                pd1: vec![0.0; pairs * d],
                pd2: vec![0.0; pairs * d],
                pw0: vec![0.0; pairs * w],
                pw1: vec![0.0; pairs * w],
                pw2: vec![0.0; pairs * w],
                p4d: vec![0.0; pairs * 4 * d],
                nd0: vec![0.0; n * d],
                nd1: vec![0.0; n * d],
                nw0: vec![0.0; n * w],
                nw1: vec![0.0; n * w],
                nw2: vec![0.0; n * w],
                n3d: vec![0.0; n * 3 * d],
            },
            shape: (n, pairs, graph.attend.len(), graph.structural.len(), d, map.layers.len(), map.heads),
        }
    }

    /// The number of floats this tape holds (its memory is 4 bytes each).
    pub fn floats(&self) -> usize {
        let mlp = |m: &MlpTape| m.input.len() + m.pre0.len() + m.pre1.len();
        let norm = |n: &NormTape| n.xhat.len() + n.rstd.len();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.x_in.len() + l.e_in.len() + l.qkvn.len() + l.qkve.len() + l.alpha.len() + l.o.len() + l.att.len()
                    + norm(&l.ln_n0) + l.h_n.len() + norm(&l.ln_n1) + l.a.len() + norm(&l.ln_e0) + l.h_e.len() + norm(&l.ln_e1)
            })
            .sum();
        let w = &self.work;
        let work = [&w.pd0, &w.pd1, &w.pd2, &w.pw0, &w.pw1, &w.pw2, &w.p4d, &w.nd0, &w.nd1, &w.nw0, &w.nw1, &w.nw2, &w.n3d]
            .iter()
            .map(|v| v.len())
            .sum::<usize>();
        layers + work + mlp(&self.edge_embed) + mlp(&self.node_embed) + mlp(&self.edge_head) + mlp(&self.node_head)
            + self.edge_embed_out.len() + self.node_embed_out.len() + self.x_final.len() + self.e_final.len()
    }

    /// Whether this tape was sized for `graph` under a model of shape `map`.
    pub fn fits(&self, map: &ParamMap, graph: &FusedGraph) -> bool {
        self.shape == (graph.nodes, graph.pairs, graph.attend.len(), graph.structural.len(), map.d, map.layers.len(), map.heads)
    }
}

pub(super) fn weight(params: &[f32], lin: Lin) -> &[f32] {
    &params[lin.w..lin.w + lin.d_in * lin.d_out]
}

pub(super) fn bias(params: &[f32], lin: Lin) -> Option<&[f32]> {
    lin.b.map(|b| &params[b..b + lin.d_out])
}

/// `y = x·W (+ b)` over `rows` rows.
pub(super) fn linear(params: &[f32], lin: Lin, x: &[f32], rows: usize, y: &mut [f32]) {
    gemm(rows, lin.d_in, lin.d_out, x, false, weight(params, lin), false, y, false);
    if let Some(b) = bias(params, lin) {
        add_bias(&mut y[..rows * lin.d_out], b);
    }
}

pub(super) fn activate(act: Act, x: &[f32], out: &mut [f32]) {
    match act {
        Act::Silu => silu(x, out),
        Act::Relu => relu(x, out),
    }
}

/// `Lin → act → Lin → act → Lin` on `tape.input`, writing `out`.
pub(super) fn mlp3_forward(params: &[f32], lins: &[Lin; 3], act: Act, tape: &mut MlpTape, out: &mut [f32]) {
    let rows = tape.rows;
    let mut hidden = vec![0.0; rows * lins[0].d_out];
    linear(params, lins[0], &tape.input, rows, &mut tape.pre0);
    activate(act, &tape.pre0, &mut hidden);
    linear(params, lins[1], &hidden, rows, &mut tape.pre1);
    activate(act, &tape.pre1, &mut hidden);
    linear(params, lins[2], &hidden, rows, out);
}

/// Relational attention of one graph (docs/science.md §6.5): writes `alpha` and `o`. Node `i`
/// attends over the pairs `graph.attend` lists for it.
fn attention_forward(graph: &FusedGraph, d: usize, heads: usize, qkvn: &[f32], qkve: &[f32], alpha: &mut [f32], o: &mut [f32]) {
    let dh = d / heads;
    let scale = 1.0 / (d as f32).sqrt();
    o.fill(0.0);
    for i in 0..graph.nodes {
        let (start, end) = (graph.attend_start[i] as usize, graph.attend_start[i + 1] as usize);
        let attended = &graph.attend[start..end];
        for h in 0..heads {
            let qn = &qkvn[i * 3 * d + h * 3 * dh..][..dh];
            let row = &mut alpha[start * heads + h * attended.len()..][..attended.len()];
            let mut max = f32::NEG_INFINITY;
            for (s, &pair) in row.iter_mut().zip(attended) {
                let j = graph.target[pair as usize] as usize;
                let e = &qkve[pair as usize * 4 * d + h * 4 * dh..][..2 * dh];
                let kn = &qkvn[j * 3 * d + h * 3 * dh + dh..][..dh];
                let mut dot = 0.0;
                for c in 0..dh {
                    dot += (qn[c] + e[c]) * (kn[c] + e[dh + c]);
                }
                *s = dot * scale;
                max = max.max(*s);
            }
            let mut total = 0.0;
            for s in row.iter_mut() {
                *s = super::kernels::exp(*s - max);
                total += *s;
            }
            let out = &mut o[i * d + h * dh..][..dh];
            for (s, &pair) in row.iter_mut().zip(attended) {
                *s /= total;
                let j = graph.target[pair as usize] as usize;
                let e = &qkve[pair as usize * 4 * d + h * 4 * dh..][..4 * dh];
                let vn = &qkvn[j * 3 * d + h * 3 * dh + 2 * dh..][..dh];
                for c in 0..dh {
                    out[c] += *s * (vn[c] * e[3 * dh + c] + e[2 * dh + c]);
                }
            }
        }
    }
}

fn norm<'p>(params: &'p [f32], offset: usize, d: usize) -> &'p [f32] {
    &params[offset..offset + d]
}

/// `out = LN(x + Lin1(GELU(Lin0(x))))`, the node and edge MLP blocks of a layer.
struct ResidualMlp<'a> {
    mlp: &'a [Lin; 2],
    ln: Norm,
    rows: usize,
}

impl ResidualMlp<'_> {
    /// Saves the pre-GELU activations in `hidden` and the LayerNorm statistics in `saved`;
    /// `scratch` and `z` are work space.
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, params: &[f32], x: &[f32], hidden: &mut [f32], scratch: &mut [f32], z: &mut [f32], saved: &mut NormTape, out: &mut [f32]) {
        linear(params, self.mlp[0], x, self.rows, hidden);
        gelu(hidden, scratch);
        linear(params, self.mlp[1], scratch, self.rows, z);
        add_in_place(z, x);
        let (g, b) = (norm(params, self.ln.gamma, self.ln.d), norm(params, self.ln.beta, self.ln.d));
        layer_norm(z, g, b, out, &mut saved.xhat, &mut saved.rstd);
    }
}

/// One RT layer: reads `tape.x_in`, `tape.e_in`, writes `x_out`, `e_out`.
fn layer_forward(
    params: &[f32],
    lp: &LayerParams,
    map: &ParamMap,
    graph: &FusedGraph,
    tape: &mut LayerTape,
    work: &mut Work,
    x_out: &mut [f32],
    e_out: &mut [f32],
) {
    let (d, w) = (map.d, map.width);
    let (n, pairs) = (graph.nodes, graph.pairs);
    // Attention.
    linear(params, lp.qkv_node, &tape.x_in, n, &mut tape.qkvn);
    linear(params, lp.qkv_edge, &tape.e_in, pairs, &mut tape.qkve);
    attention_forward(graph, d, map.heads, &tape.qkvn, &tape.qkve, &mut tape.alpha, &mut tape.o);
    linear(params, lp.att_out, &tape.o, n, &mut tape.att);
    // Node update: X1 = LN(X + lin0(att)), X2 = LN(X1 + mlp(X1)).
    let z = &mut work.nw0;
    linear(params, lp.lin0, &tape.att, n, z);
    add_in_place(z, &tape.x_in);
    let x1 = &mut work.nw1;
    let (g, b) = (norm(params, lp.ln_n0.gamma, w), norm(params, lp.ln_n0.beta, w));
    layer_norm(z, g, b, x1, &mut tape.ln_n0.xhat, &mut tape.ln_n0.rstd);
    let block = ResidualMlp { mlp: &lp.node_mlp, ln: lp.ln_n1, rows: n };
    block.forward(params, x1, &mut tape.h_n, &mut work.nd0, z, &mut tape.ln_n1, x_out);
    // Edge message: a_ij = E_ij·W_top + E_ji·W_bot + b + X2_i·W_s + b_s + X2_j·W_t + b_t.
    let pair_w = weight(params, lp.msg_pair);
    gemm(pairs, w, d, &tape.e_in, false, &pair_w[..w * d], false, &mut work.pd0, false);
    gemm(pairs, w, d, &tape.e_in, false, &pair_w[w * d..], false, &mut work.pd1, false);
    linear(params, lp.msg_source, x_out, n, &mut work.nd0);
    linear(params, lp.msg_target, x_out, n, &mut work.nd1);
    let pair_b = bias(params, lp.msg_pair).expect("message bias");
    for p in 0..pairs {
        let (i, j, r) = (graph.source[p] as usize, graph.target[p] as usize, graph.reverse[p] as usize);
        let a = &mut tape.a[p * d..][..d];
        let top = &work.pd0[p * d..][..d];
        let bot = &work.pd1[r * d..][..d];
        let s = &work.nd0[i * d..][..d];
        let t = &work.nd1[j * d..][..d];
        for c in 0..d {
            a[c] = top[c] + bot[c] + pair_b[c] + s[c] + t[c];
        }
    }
    gelu(&tape.a, &mut work.pd0);
    let m = &mut work.pw0;
    linear(params, lp.msg_out, &work.pd0, pairs, m);
    add_in_place(m, &tape.e_in);
    let e1 = &mut work.pw1;
    let (g, b) = (norm(params, lp.ln_e0.gamma, w), norm(params, lp.ln_e0.beta, w));
    layer_norm(m, g, b, e1, &mut tape.ln_e0.xhat, &mut tape.ln_e0.rstd);
    // Edge MLP: E2 = LN(E1 + mlp(E1)).
    let block = ResidualMlp { mlp: &lp.edge_mlp, ln: lp.ln_e1, rows: pairs };
    block.forward(params, e1, &mut tape.h_e, &mut work.pd0, m, &mut tape.ln_e1, e_out);
}

/// The flat prediction `[P]` for one network `x` `[P]` at time `t`.
pub(super) fn forward(params: &[f32], map: &ParamMap, graph: &FusedGraph, x: &[f32], t: f32, tape: &mut Tape, out: &mut [f32]) {
    let (n, d, w) = (graph.nodes, map.d, map.width);
    let pairs = graph.pairs;
    let structural = graph.structural.len();
    // Edge inputs: one embedding per structural weight plus one for all zero pairs.
    // The flat layout stores all weights first, in the order of `graph.structural`.
    tape.edge_embed.input[..structural].copy_from_slice(&x[..structural]);
    tape.edge_embed.input[structural] = 0.0;
    mlp3_forward(params, &map.proj_weight, Act::Silu, &mut tape.edge_embed, &mut tape.edge_embed_out);
    let rows = structural + 1;
    let mut edge_rows = vec![0.0; rows * d];
    linear(params, map.proj_edge_in, &tape.edge_embed_out, rows, &mut edge_rows);
    // Node inputs: 0 for input neurons, the bias otherwise.
    for i in 0..n {
        tape.node_embed.input[i] = if i < graph.inputs { 0.0 } else { x[structural + i - graph.inputs] };
    }
    mlp3_forward(params, &map.proj_bias, Act::Silu, &mut tape.node_embed, &mut tape.node_embed_out);
    let layer0 = &mut tape.layers[0];
    let mut node_rows = vec![0.0; n * d];
    linear(params, map.proj_node_in, &tape.node_embed_out, n, &mut node_rows);
    for i in 0..n {
        let row = &mut layer0.x_in[i * w..][..w];
        let pos = &params[map.pos + graph.pos_row[i] * d..][..d];
        for c in 0..d {
            row[c] = node_rows[i * d + c] + pos[c];
        }
        row[d] = if graph.node_fixed[i] { 1.0 } else { t };
    }
    for pair in 0..pairs {
        let row = &mut layer0.e_in[pair * w..][..w];
        row[..d].copy_from_slice(&edge_rows[graph.pair_source[pair] as usize * d..][..d]);
        row[d] = if graph.edge_fixed[pair] { 1.0 } else { t };
    }
    let count = tape.layers.len();
    for l in 0..count {
        let (head, tail) = tape.layers.split_at_mut(l + 1);
        let layer = &mut head[l];
        let (x_out, e_out) = match tail.first_mut() {
            Some(next) => (&mut next.x_in, &mut next.e_in),
            None => (&mut tape.x_final, &mut tape.e_final),
        };
        layer_forward(params, &map.layers[l], map, graph, layer, &mut tape.work, x_out, e_out);
    }
    // Heads: structural edges in flat weight order, then non-input nodes in node order.
    for (k, &pair) in graph.structural.iter().enumerate() {
        tape.edge_head.input[k * w..][..w].copy_from_slice(&tape.e_final[pair as usize * w..][..w]);
    }
    tape.node_head.input.copy_from_slice(&tape.x_final[graph.inputs * w..]);
    let (weights_out, biases_out) = out.split_at_mut(structural);
    mlp3_forward(params, &map.edge_head, Act::Relu, &mut tape.edge_head, weights_out);
    mlp3_forward(params, &map.node_head, Act::Relu, &mut tape.node_head, biases_out);
    if let Some(offset) = map.offset {
        for (y, b) in out.iter_mut().zip(&params[offset..offset + graph.params]) {
            *y += b;
        }
    }
}
