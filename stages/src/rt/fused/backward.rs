//! The backward pass of one network's graph: parameter gradients from the gradient of the
//! flat output, using what [`super::forward`] saved on the tape.

use super::forward::{activate, weight, Act, LayerTape, MlpTape, Tape, Work};
use super::kernels::{
    add_column_sums, gelu, gelu_backward, gelu_with_derivative, gemm, layer_norm_backward, layer_norm_output,
    multiply_in_place, relu_backward, silu_backward,
};
use super::params::{LayerParams, Lin, Norm, ParamMap};
use super::FusedGraph;

/// `dW += xᵀ·dy`, `db += Σ dy`, and `dx (+)= dy·Wᵀ` when asked.
fn linear_backward(
    params: &[f32],
    grads: &mut [f32],
    lin: Lin,
    x: &[f32],
    dy: &[f32],
    rows: usize,
    dx: Option<(&mut [f32], bool)>,
) {
    gemm(lin.d_in, rows, lin.d_out, x, true, dy, false, &mut grads[lin.w..lin.w + lin.d_in * lin.d_out], true);
    if let Some(b) = lin.b {
        add_column_sums(&mut grads[b..b + lin.d_out], &dy[..rows * lin.d_out]);
    }
    if let Some((dx, accumulate)) = dx {
        gemm(rows, lin.d_out, lin.d_in, dy, false, weight(params, lin), true, dx, accumulate);
    }
}

fn norm_backward(params: &[f32], grads: &mut [f32], ln: Norm, tape_xhat: &[f32], rstd: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert_eq!(ln.beta, ln.gamma + ln.d, "γ and β are adjacent in the arena");
    let (dgamma, dbeta) = grads[ln.gamma..ln.beta + ln.d].split_at_mut(ln.d);
    layer_norm_backward(dy, tape_xhat, rstd, &params[ln.gamma..ln.gamma + ln.d], dx, dgamma, dbeta);
}

fn norm_output(params: &[f32], ln: Norm, xhat: &[f32], y: &mut [f32]) {
    layer_norm_output(xhat, &params[ln.gamma..ln.gamma + ln.d], &params[ln.beta..ln.beta + ln.d], y);
}

fn activate_backward(act: Act, x: &[f32], grad: &mut [f32]) {
    match act {
        Act::Silu => silu_backward(x, grad),
        Act::Relu => relu_backward(x, grad),
    }
}

/// Backward of `Lin → act → Lin → act → Lin`; writes the input gradient when asked.
fn mlp3_backward(params: &[f32], grads: &mut [f32], lins: &[Lin; 3], act: Act, tape: &MlpTape, dout: &[f32], dinput: Option<&mut [f32]>) {
    let rows = tape.rows;
    let d = lins[0].d_out;
    let mut hidden = vec![0.0; rows * d];
    let mut dh = vec![0.0; rows * d];
    let mut dh0 = vec![0.0; rows * d];
    activate(act, &tape.pre1, &mut hidden);
    linear_backward(params, grads, lins[2], &hidden, dout, rows, Some((&mut dh, false)));
    activate_backward(act, &tape.pre1, &mut dh);
    activate(act, &tape.pre0, &mut hidden);
    linear_backward(params, grads, lins[1], &hidden, &dh, rows, Some((&mut dh0, false)));
    activate_backward(act, &tape.pre0, &mut dh0);
    linear_backward(params, grads, lins[0], &tape.input, &dh0, rows, dinput.map(|dx| (dx, false)));
}

/// Gradients of one attention block: `dqkvn` (accumulated, pre-zeroed) and `dqkve`
/// (overwritten on the attended pairs, which must be zero elsewhere).
#[allow(clippy::too_many_arguments)]
fn attention_backward(
    graph: &FusedGraph,
    d: usize,
    heads: usize,
    qkvn: &[f32],
    qkve: &[f32],
    alpha: &[f32],
    d_o: &[f32],
    dqkvn: &mut [f32],
    dqkve: &mut [f32],
) {
    let dh = d / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut dalpha = Vec::new();
    for i in 0..graph.nodes {
        let (start, end) = (graph.attend_start[i] as usize, graph.attend_start[i + 1] as usize);
        let attended = &graph.attend[start..end];
        dalpha.resize(attended.len(), 0.0f32);
        for h in 0..heads {
            let row = &alpha[start * heads + h * attended.len()..][..attended.len()];
            let go = &d_o[i * d + h * dh..][..dh];
            // dα_ij = ⟨do_i, v_ij⟩
            let mut weighted = 0.0;
            for ((da, &a), &pair) in dalpha.iter_mut().zip(row).zip(attended) {
                let j = graph.target[pair as usize] as usize;
                let e = &qkve[pair as usize * 4 * d + h * 4 * dh..][..4 * dh];
                let vn = &qkvn[j * 3 * d + h * 3 * dh + 2 * dh..][..dh];
                let mut s = 0.0;
                for c in 0..dh {
                    s += go[c] * (vn[c] * e[3 * dh + c] + e[2 * dh + c]);
                }
                *da = s;
                weighted += a * s;
            }
            for ((&da, &a), &pair) in dalpha.iter().zip(row).zip(attended) {
                let j = graph.target[pair as usize] as usize;
                let ds = a * (da - weighted) * scale;
                let base = pair as usize * 4 * d + h * 4 * dh;
                let e = &qkve[base..][..4 * dh];
                let node_j = j * 3 * d + h * 3 * dh;
                let node_i = i * 3 * d + h * 3 * dh;
                let ge = &mut dqkve[base..][..4 * dh];
                for c in 0..dh {
                    let q = qkvn[node_i + c] + e[c];
                    let k = qkvn[node_j + dh + c] + e[dh + c];
                    let dq = ds * k;
                    let dk = ds * q;
                    let dv = a * go[c];
                    ge[c] = dq;
                    ge[dh + c] = dk;
                    ge[2 * dh + c] = dv;
                    ge[3 * dh + c] = dv * qkvn[node_j + 2 * dh + c];
                    dqkvn[node_i + c] += dq;
                    dqkvn[node_j + dh + c] += dk;
                    dqkvn[node_j + 2 * dh + c] += dv * e[3 * dh + c];
                }
            }
        }
    }
}

/// One layer backward: from `dx_out`, `de_out` to `dx_in`, `de_in` (overwritten).
#[allow(clippy::too_many_arguments)]
fn layer_backward(
    params: &[f32],
    grads: &mut [f32],
    lp: &LayerParams,
    map: &ParamMap,
    graph: &FusedGraph,
    tape: &LayerTape,
    work: &mut Work,
    dx_out: &[f32],
    de_out: &[f32],
    dx_in: &mut [f32],
    de_in: &mut [f32],
) {
    let (d, w) = (map.d, map.width);
    let (n, pairs) = (graph.nodes, graph.pairs);
    // E2 = LN_e1(E1 + mlp(E1)).
    let e1 = &mut work.pw1;
    norm_output(params, lp.ln_e0, &tape.ln_e0.xhat, e1);
    let dz = &mut work.pw0;
    norm_backward(params, grads, lp.ln_e1, &tape.ln_e1.xhat, &tape.ln_e1.rstd, de_out, dz);
    gelu_with_derivative(&tape.h_e, &mut work.pd0, &mut work.pd2);
    linear_backward(params, grads, lp.edge_mlp[1], &work.pd0, dz, pairs, Some((&mut work.pd1, false)));
    multiply_in_place(&mut work.pd1, &work.pd2);
    let de1 = &mut work.pw2;
    de1.copy_from_slice(dz);
    linear_backward(params, grads, lp.edge_mlp[0], e1, &work.pd1, pairs, Some((de1, true)));
    // E1 = LN_e0(E + m).
    norm_backward(params, grads, lp.ln_e0, &tape.ln_e0.xhat, &tape.ln_e0.rstd, de1, dz);
    de_in.copy_from_slice(dz);
    // m = msg_out(GELU(a)).
    gelu_with_derivative(&tape.a, &mut work.pd0, &mut work.pd2);
    linear_backward(params, grads, lp.msg_out, &work.pd0, dz, pairs, Some((&mut work.pd1, false)));
    multiply_in_place(&mut work.pd1, &work.pd2);
    let da = &work.pd1;
    // a_ij = E_ij·W_top + E_ji·W_bot + b + S_i + T_j.
    let dat = &mut work.pd2;
    for (p, &r) in graph.reverse.iter().enumerate() {
        dat[p * d..][..d].copy_from_slice(&da[r as usize * d..][..d]);
    }
    let lin = lp.msg_pair;
    let (top, bot) = (lin.w, lin.w + w * d);
    gemm(w, pairs, d, &tape.e_in, true, da, false, &mut grads[top..top + w * d], true);
    gemm(w, pairs, d, &tape.e_in, true, dat, false, &mut grads[bot..bot + w * d], true);
    let pair_b = lin.b.expect("message bias");
    add_column_sums(&mut grads[pair_b..pair_b + d], da);
    let pair_w = weight(params, lin);
    gemm(pairs, d, w, da, false, &pair_w[..w * d], true, de_in, true);
    gemm(pairs, d, w, dat, false, &pair_w[w * d..], true, de_in, true);
    let ds = &mut work.nd0;
    let dt = &mut work.nd1;
    ds.fill(0.0);
    dt.fill(0.0);
    for p in 0..pairs {
        let (i, j) = (graph.source[p] as usize, graph.target[p] as usize);
        let g = &da[p * d..][..d];
        for c in 0..d {
            ds[i * d + c] += g[c];
            dt[j * d + c] += g[c];
        }
    }
    let x2 = &mut work.nw0;
    norm_output(params, lp.ln_n1, &tape.ln_n1.xhat, x2);
    let dx2 = &mut work.nw1;
    dx2.copy_from_slice(dx_out);
    linear_backward(params, grads, lp.msg_source, x2, ds, n, Some((dx2, true)));
    linear_backward(params, grads, lp.msg_target, x2, dt, n, Some((dx2, true)));
    // X2 = LN_n1(X1 + mlp(X1)).
    let dzn = &mut work.nw2;
    norm_backward(params, grads, lp.ln_n1, &tape.ln_n1.xhat, &tape.ln_n1.rstd, dx2, dzn);
    let x1 = &mut work.nw0;
    norm_output(params, lp.ln_n0, &tape.ln_n0.xhat, x1);
    gelu(&tape.h_n, &mut work.nd0);
    linear_backward(params, grads, lp.node_mlp[1], &work.nd0, dzn, n, Some((&mut work.nd1, false)));
    gelu_backward(&tape.h_n, &mut work.nd1);
    let dx1 = &mut work.nw1;
    dx1.copy_from_slice(dzn);
    linear_backward(params, grads, lp.node_mlp[0], x1, &work.nd1, n, Some((dx1, true)));
    // X1 = LN_n0(X + lin0(att)).
    norm_backward(params, grads, lp.ln_n0, &tape.ln_n0.xhat, &tape.ln_n0.rstd, dx1, dzn);
    dx_in.copy_from_slice(dzn);
    let datt = &mut work.nw0;
    linear_backward(params, grads, lp.lin0, &tape.att, dzn, n, Some((datt, false)));
    // att = proj_out(o).
    let d_o = &mut work.nd0;
    linear_backward(params, grads, lp.att_out, &tape.o, datt, n, Some((d_o, false)));
    let dqkvn = &mut work.n3d;
    dqkvn.fill(0.0);
    if graph.attend.len() < pairs {
        work.p4d.fill(0.0); // pairs nobody attends over get no attention gradient
    }
    attention_backward(graph, d, map.heads, &tape.qkvn, &tape.qkve, &tape.alpha, d_o, dqkvn, &mut work.p4d);
    linear_backward(params, grads, lp.qkv_edge, &tape.e_in, &work.p4d, pairs, Some((de_in, true)));
    linear_backward(params, grads, lp.qkv_node, &tape.x_in, dqkvn, n, Some((dx_in, true)));
}

/// Accumulates into `grads` the parameter gradient of `⟨dout, forward(x)⟩` for the sample
/// whose forward pass filled `tape`.
pub(super) fn backward(params: &[f32], map: &ParamMap, graph: &FusedGraph, tape: &mut Tape, dout: &[f32], grads: &mut [f32]) {
    let (n, d, w) = (graph.nodes, map.d, map.width);
    let pairs = graph.pairs;
    let structural = graph.structural.len();
    // The readout offset is added to the output: its gradient is `dout`.
    if let Some(offset) = map.offset {
        for (g, dy) in grads[offset..offset + graph.params].iter_mut().zip(dout) {
            *g += dy;
        }
    }
    // Heads.
    let mut de = vec![0.0f32; pairs * w];
    let mut dx = vec![0.0f32; n * w];
    let mut d_head = vec![0.0f32; structural * w];
    mlp3_backward(params, grads, &map.edge_head, Act::Relu, &tape.edge_head, &dout[..structural], Some(&mut d_head));
    for (k, &pair) in graph.structural.iter().enumerate() {
        de[pair as usize * w..][..w].copy_from_slice(&d_head[k * w..][..w]);
    }
    mlp3_backward(params, grads, &map.node_head, Act::Relu, &tape.node_head, &dout[structural..], Some(&mut dx[graph.inputs * w..]));
    // Layers, last to first.
    let mut dx_in = vec![0.0f32; n * w];
    let mut de_in = vec![0.0f32; pairs * w];
    for l in (0..tape.layers.len()).rev() {
        layer_backward(params, grads, &map.layers[l], map, graph, &tape.layers[l], &mut tape.work, &dx, &de, &mut dx_in, &mut de_in);
        std::mem::swap(&mut dx, &mut dx_in);
        std::mem::swap(&mut de, &mut de_in);
    }
    // Graph constructor: positional rows, node embedding, edge embedding (shared zero row).
    let mut d_nodes = vec![0.0f32; n * d];
    for i in 0..n {
        let g = &dx[i * w..][..d];
        d_nodes[i * d..][..d].copy_from_slice(g);
        let pos = &mut grads[map.pos + graph.pos_row[i] * d..][..d];
        for c in 0..d {
            pos[c] += g[c];
        }
    }
    let mut d_embed = vec![0.0f32; n * d];
    linear_backward(params, grads, map.proj_node_in, &tape.node_embed_out, &d_nodes, n, Some((&mut d_embed, false)));
    mlp3_backward(params, grads, &map.proj_bias, Act::Silu, &tape.node_embed, &d_embed, None);
    let rows = structural + 1;
    let mut d_edges = vec![0.0f32; rows * d];
    for pair in 0..pairs {
        let src = graph.pair_source[pair] as usize;
        let g = &de[pair * w..][..d];
        let out = &mut d_edges[src * d..][..d];
        for c in 0..d {
            out[c] += g[c];
        }
    }
    let mut d_embed = vec![0.0f32; rows * d];
    linear_backward(params, grads, map.proj_edge_in, &tape.edge_embed_out, &d_edges, rows, Some((&mut d_embed, false)));
    mlp3_backward(params, grads, &map.proj_weight, Act::Silu, &tape.edge_embed, &d_embed, None);
}
