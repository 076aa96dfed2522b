//! The relational-transformer velocity network (docs/science.md §6): flat `x_t` and `t` in,
//! a flat `[B, P]` prediction out.
//!
//! The main type is [`RelationalTransformer`], built by [`RtConfig::init`]. Its parameter
//! shapes depend on `d`, the number of layers and heads, the positional rows
//! `R = n_0 + (L−1) + n_L` and `n_L`, never on hidden widths or the batch size, so a model
//! trained on one layout runs on any layout with the same inputs, depth and outputs. (A
//! readout offset, not in the thesis, adds one tensor of the layout's size `P`.)

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{activation::relu, backend::Backend, Bool, Tensor};
use serde::{Deserialize, Serialize};

use super::dense::dense;
use super::graph::{positional_rows, GraphConstructor, GraphSpec, Positions};
use super::init::{LinearInit, ParamInit};
use super::layer::{PairIndex, RtLayer};
use crate::layout::Layout;

/// Hyper-parameters of the relational transformer (docs/science.md §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtConfig {
    /// `d_E`: attention and MLP hidden width; node and edge width is `D = d + 1`.
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    /// Positional rows `R` (from the training layout).
    pub pos_rows: usize,
    /// `n_L`, the number of outputs (sizes the unused graph-level head).
    pub outputs: usize,
    /// Length of the learned readout offset: 0 (none, the thesis) or the layout's flat
    /// parameter count `P`. Absent from `flow.json` at 0, so earlier flows read as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offsets: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl RtConfig {
    pub fn for_layout(layout: &Layout, d_model: usize, layers: usize, heads: usize) -> Self {
        RtConfig { d_model, layers, heads, pos_rows: positional_rows(layout), outputs: layout.outputs(), offsets: 0 }
    }

    /// Deterministic in `seed` (parameters and parameter ids).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> RelationalTransformer<B> {
        let d = self.d_model;
        let width = d + 1;
        let mut init = ParamInit::<B>::new(seed, device);
        let constructor = GraphConstructor::new(&mut init, d, self.pos_rows);
        let layers = (0..self.layers).map(|_| RtLayer::new(&mut init, d, self.heads)).collect();
        let edge_head = ReadoutHead::new(&mut init, width, d);
        let node_head = ReadoutHead::new(&mut init, width, d);
        let graph_head = ReadoutHead::new(&mut init, self.outputs * width, d);
        // Created last and zero, so every other parameter (values and ids) is that of the
        // model without it.
        let offset = (self.offsets > 0).then(|| init.zeros(self.offsets));
        RelationalTransformer { constructor, layers, edge_head, node_head, graph_head, offset }
    }

    /// The same config with the positional table sized for `positions` over `layout`.
    pub fn with_positions(self, layout: &Layout, positions: Positions) -> Self {
        RtConfig { pos_rows: positions.rows(layout), ..self }
    }

    /// The same config with a learned offset per flat parameter of `layout` added to the
    /// output, when `offset` is set.
    pub fn with_offset(self, layout: &Layout, offset: bool) -> Self {
        RtConfig { offsets: if offset { layout.num_params() } else { 0 }, ..self }
    }

    /// Why `layout` cannot be fed to a model of this config whose nodes read their
    /// positional rows under `positions`, if it cannot.
    pub fn incompatibility(&self, layout: &Layout, positions: Positions) -> Option<String> {
        let rows = positions.rows(layout);
        if self.offsets > 0 && self.offsets != layout.num_params() {
            return Some(format!(
                "layout {layout} has {} parameters; the model's readout offset has {} (an offset ties a flow to its training widths)",
                layout.num_params(),
                self.offsets
            ));
        }
        if rows == self.pos_rows && layout.outputs() == self.outputs {
            return None;
        }
        let why = if positions.is_shared() { "" } else { " (per-neuron positions tie a flow to its training widths)" };
        Some(format!(
            "layout {layout} needs {rows} positional rows and {} outputs; the model has {} and {}{why}",
            layout.outputs(),
            self.pos_rows,
            self.outputs
        ))
    }
}

/// Linear(in→d) → ReLU → Linear(d→d) → ReLU → Linear(d→1).
#[derive(Module, Debug)]
pub struct ReadoutHead<B: Backend> {
    lin0: Linear<B>,
    lin1: Linear<B>,
    lin2: Linear<B>,
}

impl<B: Backend> ReadoutHead<B> {
    fn new(init: &mut ParamInit<B>, d_in: usize, d: usize) -> Self {
        ReadoutHead {
            lin0: init.linear(d_in, d, true, LinearInit::TorchDefault),
            lin1: init.linear(d, d, true, LinearInit::TorchDefault),
            lin2: init.linear(d, 1, true, LinearInit::TorchDefault),
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, count, _] = x.dims();
        let h = relu(dense(&self.lin0, x));
        let h = relu(dense(&self.lin1, h));
        dense(&self.lin2, h).reshape([batch, count])
    }
}

#[derive(Module, Debug)]
pub struct RelationalTransformer<B: Backend> {
    constructor: GraphConstructor<B>,
    pub(super) layers: Vec<RtLayer<B>>,
    edge_head: ReadoutHead<B>,
    node_head: ReadoutHead<B>,
    /// The code's graph-level head: never used, but part of the parameter count.
    graph_head: ReadoutHead<B>,
    /// `[P]`, added to the flat output (`train-flow`'s `readout_offset`; not in the thesis).
    offset: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> RelationalTransformer<B> {
    /// # Shapes
    /// `x`: `[B, P]` in the flat layout of `spec.layout`, `t`: `[B]` → `[B, P]`.
    pub fn forward(&self, x: Tensor<B, 2>, t: Tensor<B, 1>, spec: &GraphSpec) -> Tensor<B, 2> {
        if spec.attention.is_dense() {
            self.forward_dense(x, t, spec, None)
        } else {
            self.forward_pairs(x, t, spec)
        }
    }

    /// The dense model; `mask` `[N, N]` (true: left out of the softmax) gives the masked
    /// dense model that a sparse pair set must equal.
    pub fn forward_dense(&self, x: Tensor<B, 2>, t: Tensor<B, 1>, spec: &GraphSpec, mask: Option<&Tensor<B, 2, Bool>>) -> Tensor<B, 2> {
        let (mut nodes, mut edges) = self.embed_dense(&x, &t, spec);
        for layer in &self.layers {
            (nodes, edges) = layer.forward(nodes, edges, mask);
        }
        self.readout(nodes, spec.structural_edges(edges), spec)
    }

    fn forward_pairs(&self, x: Tensor<B, 2>, t: Tensor<B, 1>, spec: &GraphSpec) -> Tensor<B, 2> {
        let pairs = PairIndex::new(&spec.pairs, &x.device());
        let (mut nodes, mut edges) = self.embed_pairs(&x, &t, spec);
        for layer in &self.layers {
            (nodes, edges) = layer.forward_pairs(nodes, edges, &pairs);
        }
        self.readout(nodes, spec.structural_pairs(edges), spec)
    }

    /// The states before the first layer, with the time channel: nodes `[B, N, D]`, edges
    /// `[B, N, N, D]`.
    pub(super) fn embed_dense(&self, x: &Tensor<B, 2>, t: &Tensor<B, 1>, spec: &GraphSpec) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (nodes, edges) = self.constructor.forward(x, spec); // [B, N, d], [B, N, N, d]
        let (node_time, edge_time) = spec.time_channels(t);
        let [batch, n, _] = nodes.dims();
        let nodes = Tensor::cat(vec![nodes, node_time], 2);
        (nodes, Tensor::cat(vec![edges, edge_time.reshape([batch, n, n, 1])], 3))
    }

    /// The same over the kept pairs: nodes `[B, N, D]`, edges `[B, M, D]`.
    pub(super) fn embed_pairs(&self, x: &Tensor<B, 2>, t: &Tensor<B, 1>, spec: &GraphSpec) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (nodes, edges) = self.constructor.forward_pairs(x, spec); // [B, N, d], [B, M, d]
        let (node_time, edge_time) = spec.time_channels(t);
        (Tensor::cat(vec![nodes, node_time], 2), Tensor::cat(vec![edges, edge_time], 2))
    }

    /// Structural edges `[B, P_W, D]` and nodes `[B, N, D]` → the flat `[B, P]` output.
    pub(super) fn readout(&self, nodes: Tensor<B, 3>, structural: Tensor<B, 3>, spec: &GraphSpec) -> Tensor<B, 2> {
        let weights = self.edge_head.forward(structural); // [B, P_W]
        let [batch, n, width] = nodes.dims();
        let inputs = spec.layout.inputs();
        let biases = self.node_head.forward(nodes.slice([0..batch, inputs..n, 0..width])); // [B, Σ n_l]
        let out = Tensor::cat(vec![weights, biases], 1);
        match &self.offset {
            Some(offset) => out + offset.val().unsqueeze_dim(0),
            None => out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::ResumableRng;
    use crate::rt::graph::TimeChannel;
    use crate::rt::pairs::Attention;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    fn count(layout: &[usize], d: usize, layers: usize) -> usize {
        let cfg = RtConfig::for_layout(&Layout(layout.to_vec()), d, layers, 1);
        cfg.init::<B>(0, &Default::default()).num_params()
    }

    #[test]
    fn parameter_counts_match_the_spec() {
        assert_eq!(count(&[784, 10, 10], 32, 5), 145_769);
        assert_eq!(count(&[784, 10, 10], 16, 5), 44_505);
        assert_eq!(count(&[784, 10, 10], 8, 5), 15_185);
        assert_eq!(count(&[30, 16, 16, 2], 64, 5), 436_809);
        assert_eq!(count(&[30, 16, 16, 2], 32, 5), 112_969);
        assert_eq!(count(&[784, 10, 10], 8, 3), 12_293);
        // shapes do not depend on hidden widths
        assert_eq!(count(&[784, 32, 10], 32, 5), 145_769);
    }

    fn input(layout: &Layout, batch: usize, seed: u64) -> Vec<f32> {
        ResumableRng::seed_from(seed).normal_vec(batch * layout.num_params(), 0.0, 0.5)
    }

    fn run(model: &RelationalTransformer<B>, layout: &Layout, x: &[f32], t: &[f32], time: TimeChannel) -> Vec<f32> {
        run_with(model, &GraphSpec::new(layout, time, Attention::Dense), x, t)
    }

    fn run_with(model: &RelationalTransformer<B>, spec: &GraphSpec, x: &[f32], t: &[f32]) -> Vec<f32> {
        let dev = Default::default();
        let xt = crate::rows::rows_tensor::<B>(x, spec.layout.num_params(), &dev);
        let tt = crate::rows::column_tensor::<B>(t, &dev);
        crate::rows::host_rows(model.forward(xt, tt, spec))
    }

    /// Permutes hidden neuron `b` of layer 1 to `perm[b]` in a flat network.
    fn permute_first_hidden(layout: &Layout, theta: &[f32], perm: &[usize]) -> Vec<f32> {
        let n = layout.sizes();
        let mut out = theta.to_vec();
        for (b, &pb) in perm.iter().enumerate() {
            for a in 0..n[0] {
                out[layout.weight_index(1, pb, a)] = theta[layout.weight_index(1, b, a)];
            }
            out[layout.bias_index(1, pb)] = theta[layout.bias_index(1, b)];
            for o in 0..n[2] {
                out[layout.weight_index(2, o, pb)] = theta[layout.weight_index(2, o, b)];
            }
        }
        out
    }

    #[test]
    fn equivariant_to_hidden_neuron_permutations() {
        let layout = Layout(vec![3, 4, 2]);
        let model = RtConfig::for_layout(&layout, 8, 2, 1).init::<B>(5, &Default::default());
        let x = input(&layout, 2, 9);
        let p = layout.num_params();
        let perm = [2usize, 0, 3, 1];
        let xp: Vec<f32> = x.chunks(p).flat_map(|row| permute_first_hidden(&layout, row, &perm)).collect();
        for attention in [Attention::Dense, Attention::LayerBlocks] {
            let run = |x: &[f32]| run_with(&model, &GraphSpec::new(&layout, TimeChannel::Faithful, attention), x, &[0.3, 0.7]);
            let y = run(&x);
            let yp = run(&xp);
            let expected: Vec<f32> = y.chunks(p).flat_map(|row| permute_first_hidden(&layout, row, &perm)).collect();
            for (a, b) in yp.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-4, "{attention:?}: {a} vs {b}");
            }
            // but not to input-neuron permutations (distinct embeddings)
            let mut xs = x.clone();
            xs.swap(layout.weight_index(1, 0, 0), layout.weight_index(1, 0, 1));
            let ys = run(&xs);
            assert!(ys.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-4), "{attention:?}");
        }
    }

    #[test]
    fn per_neuron_positions_tell_hidden_neurons_apart() {
        use crate::rt::graph::Positions;
        let layout = Layout(vec![3, 4, 2]);
        let config = RtConfig::for_layout(&layout, 8, 2, 1);
        let per_neuron = config.clone().with_positions(&layout, Positions::PerNeuron);
        // one row per node (9) instead of 3 inputs + 1 hidden layer + 2 outputs (6)
        assert_eq!((config.pos_rows, per_neuron.pos_rows), (6, 9));
        assert_eq!(per_neuron.init::<B>(0, &Default::default()).num_params(), config.init::<B>(0, &Default::default()).num_params() + 3 * 8);
        assert_eq!(per_neuron.incompatibility(&layout, Positions::PerNeuron), None);
        let wider = Layout(vec![3, 5, 2]);
        assert_eq!(config.incompatibility(&wider, Positions::Shared), None, "shared rows serve any hidden width");
        let why = per_neuron.incompatibility(&wider, Positions::PerNeuron).expect("per-neuron rows are tied to the widths");
        assert!(why.contains("needs 10 positional rows") && why.contains("per-neuron"), "{why}");

        let model = per_neuron.init::<B>(5, &Default::default());
        let x = input(&layout, 2, 9);
        let p = layout.num_params();
        let perm = [2usize, 0, 3, 1];
        let xp: Vec<f32> = x.chunks(p).flat_map(|row| permute_first_hidden(&layout, row, &perm)).collect();
        let spec = GraphSpec::new(&layout, TimeChannel::Faithful, Attention::LayerBlocks).with_positions(Positions::PerNeuron);
        assert_eq!(spec.pos_row, (0..9).collect::<Vec<i64>>());
        let y = run_with(&model, &spec, &x, &[0.3, 0.7]);
        let yp = run_with(&model, &spec, &xp, &[0.3, 0.7]);
        let expected: Vec<f32> = y.chunks(p).flat_map(|row| permute_first_hidden(&layout, row, &perm)).collect();
        assert!(yp.iter().zip(&expected).any(|(a, b)| (a - b).abs() > 1e-3), "per-neuron rows leave the network equivariant");
    }

    #[test]
    fn the_readout_offset_adds_p_parameters_and_starts_as_the_model_without_it() {
        use crate::rt::graph::Positions;
        let layout = Layout(vec![784, 10, 10]);
        let config = RtConfig::for_layout(&layout, 8, 5, 1);
        // P = 784·10 + 10 + 10·10 + 10 = 7,960 offsets on top of the 15,185 of the spec
        assert_eq!(config.clone().with_offset(&layout, true).init::<B>(0, &Default::default()).num_params(), 15_185 + 7_960);
        assert_eq!(config.clone().with_offset(&layout, false), config);
        let wider = Layout(vec![784, 32, 10]);
        let why = config.clone().with_offset(&layout, true).incompatibility(&wider, Positions::Shared).expect("an offset is tied to the widths");
        assert!(why.contains("has 25450 parameters") && why.contains("offset has 7960"), "{why}");

        let small = Layout(vec![3, 4, 2]);
        let plain = RtConfig::for_layout(&small, 8, 2, 1).with_positions(&small, Positions::PerNeuron);
        let offset = plain.clone().with_offset(&small, true);
        let spec = GraphSpec::new(&small, TimeChannel::Faithful, Attention::LayerBlocks).with_positions(Positions::PerNeuron);
        let x = input(&small, 2, 9);
        let y = run_with(&plain.init::<B>(5, &Default::default()), &spec, &x, &[0.3, 0.7]);
        let y_offset = run_with(&offset.init::<B>(5, &Default::default()), &spec, &x, &[0.3, 0.7]);
        assert_eq!(y, y_offset, "a zero offset, every other parameter unchanged");
        // flow.json of a flow without an offset stays as before
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("offsets"), "{json}");
        assert_eq!(serde_json::from_str::<RtConfig>(&json).unwrap(), plain);
        assert!(serde_json::to_string(&offset).unwrap().contains("\"offsets\":26"));
    }

    /// `[N, N]`: true for the pairs that `attention` leaves out.
    fn left_out<Bk: Backend>(layout: &Layout, attention: Attention) -> Tensor<Bk, 2, Bool> {
        let n = layout.num_nodes();
        let pairs = crate::rt::pairs::Pairs::new(layout, attention);
        let mut out = vec![true; n * n];
        for (&i, &j) in pairs.source.iter().zip(&pairs.target) {
            out[i as usize * n + j as usize] = false;
        }
        Tensor::from_data(TensorData::new(out, [n, n]), &Default::default())
    }

    /// Every parameter gradient of `Σ w ⊙ f(x)` in visiting order, and the input gradient,
    /// for `x` and `w` of shape `[B, P]`.
    fn gradients(
        model: &RelationalTransformer<Autodiff<B>>,
        forward: impl Fn(Tensor<Autodiff<B>, 2>) -> Tensor<Autodiff<B>, 2>,
        x: &[f32],
        w: &[f32],
        p: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        use burn::module::{ModuleVisitor, Param};
        type A = Autodiff<B>;
        struct Collect<'g>(&'g <A as burn::tensor::backend::AutodiffBackend>::Gradients, Vec<f32>);
        impl ModuleVisitor<A> for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let g = param.val().grad(self.0).map(|g| g.into_data().to_vec::<f32>().expect("f32"));
                self.1.extend(g.unwrap_or_else(|| vec![0.0; param.val().shape().num_elements()]));
            }
        }
        let dev = Default::default();
        let batch = x.len() / p;
        let xt = Tensor::<A, 2>::from_data(TensorData::new(x.to_vec(), [batch, p]), &dev).require_grad();
        let weights = Tensor::<A, 2>::from_data(TensorData::new(w.to_vec(), [batch, p]), &dev);
        let grads = (forward(xt.clone()) * weights).sum().backward();
        let mut collect = Collect(&grads, Vec::new());
        model.visit(&mut collect);
        let input = xt.grad(&grads).expect("input gradient").into_data().to_vec::<f32>().expect("f32");
        (collect.1, input)
    }

    /// Equal within `tol` relative to the largest `|b|`, or to 1 where all are smaller.
    fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
        }
    }

    #[test]
    fn layer_blocks_equal_the_masked_dense_model() {
        type A = Autodiff<B>;
        for (layout, heads, time) in [
            (Layout(vec![3, 4, 2]), 1, TimeChannel::Faithful),
            (Layout(vec![4, 3, 5, 2]), 2, TimeChannel::WeightEdges),
            (Layout(vec![2, 3, 3, 3, 1]), 1, TimeChannel::Everywhere),
        ] {
            let dev = Default::default();
            let model = RtConfig::for_layout(&layout, 8, 2, heads).init::<A>(11, &dev);
            let p = layout.num_params();
            let mut rng = ResumableRng::seed_from(3);
            let x = rng.normal_vec(3 * p, 0.0, 0.7);
            let w = rng.normal_vec(3 * p, 0.0, 1.0);
            let t = Tensor::<A, 1>::from_data(TensorData::new(vec![0.2f32, 0.5, 0.9], [3]), &dev);
            let sparse = GraphSpec::new(&layout, time, Attention::LayerBlocks);
            let dense = GraphSpec::new(&layout, time, Attention::Dense);
            let mask = left_out::<A>(&layout, Attention::LayerBlocks);
            let (gs, xs) = gradients(&model, |x| model.forward(x, t.clone(), &sparse), &x, &w, p);
            let (gm, xm) = gradients(&model, |x| model.forward_dense(x, t.clone(), &dense, Some(&mask)), &x, &w, p);
            let (gd, _) = gradients(&model, |x| model.forward(x, t.clone(), &dense), &x, &w, p);
            let xt = Tensor::<A, 2>::from_data(TensorData::new(x.clone(), [3, p]), &dev);
            let ys = model.forward(xt.clone(), t.clone(), &sparse).into_data().to_vec::<f32>().unwrap();
            let ym = model.forward_dense(xt.clone(), t.clone(), &dense, Some(&mask)).into_data().to_vec::<f32>().unwrap();
            let yd = model.forward(xt, t.clone(), &dense).into_data().to_vec::<f32>().unwrap();
            assert_close(&ys, &ym, 1e-5, &format!("{layout} output"));
            assert_close(&gs, &gm, 1e-5, &format!("{layout} parameter gradient"));
            assert_close(&xs, &xm, 1e-5, &format!("{layout} input gradient"));
            // The mask matters: the dense model is a different function.
            assert!(ys.iter().zip(&yd).any(|(a, b)| (a - b).abs() > 1e-3), "{layout}: sparse equals dense");
            assert!(gs.iter().zip(&gd).any(|(a, b)| (a - b).abs() > 1e-3), "{layout}: gradients equal dense");
            // Same parameters, same shapes: the record does not know the pair set.
            assert_eq!(gs.len(), model.num_params());
        }
    }


    #[test]
    fn batch_rows_are_independent_and_output_is_flat_ordered() {
        let layout = Layout(vec![3, 4, 2]);
        let model = RtConfig::for_layout(&layout, 8, 2, 1).init::<B>(6, &Default::default());
        let p = layout.num_params();
        let x = input(&layout, 3, 10);
        let all = run(&model, &layout, &x, &[0.1, 0.5, 0.9], TimeChannel::Faithful);
        let one = run(&model, &layout, &x[p..2 * p], &[0.5], TimeChannel::Faithful);
        assert_eq!(all.len(), 3 * p);
        for (a, b) in all[p..2 * p].iter().zip(&one) {
            assert!((a - b).abs() < 1e-5);
        }
        // A wider hidden layer runs with the same parameters.
        let wide = Layout(vec![3, 7, 2]);
        let y = run(&model, &wide, &input(&wide, 1, 3), &[0.4], TimeChannel::Faithful);
        assert_eq!(y.len(), wide.num_params());
    }

    #[test]
    fn time_channel_pattern_matches_the_code() {
        let layout = Layout(vec![2, 3, 2]);
        let spec = GraphSpec::new(&layout, TimeChannel::Faithful, Attention::Dense);
        let dev = Default::default();
        let t = Tensor::<B, 1>::from_data(TensorData::new(vec![0.25f32], [1]), &dev);
        let (nodes, edges) = spec.time_channels(&t);
        let nodes = nodes.into_data().to_vec::<f32>().expect("f32");
        let edges = edges.into_data().to_vec::<f32>().expect("f32");
        assert_eq!(nodes, vec![1.0, 1.0, 0.25, 0.25, 0.25, 0.25, 0.25]);
        let n = 7;
        for i in 0..n {
            for j in 0..n {
                let structural = (i < 2 && (2..5).contains(&j)) || ((2..5).contains(&i) && j >= 5);
                let expected = if structural { 1.0 } else { 0.25 };
                assert_eq!(edges[i * n + j], expected, "pair ({i},{j})");
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for attention in [Attention::Dense, Attention::LayerBlocks] {
            input_gradient_matches_finite_differences(attention);
        }
    }

    fn input_gradient_matches_finite_differences(attention: Attention) {
        type A = Autodiff<NdArray<f32>>;
        let layout = Layout(vec![2, 2, 1]);
        let dev = Default::default();
        let model = RtConfig::for_layout(&layout, 4, 1, 1).init::<A>(2, &dev);
        let spec = GraphSpec::new(&layout, TimeChannel::Faithful, attention);
        let p = layout.num_params();
        let x: Vec<f32> = input(&layout, 1, 4);
        let loss_at = |x: &[f32]| -> (f32, Vec<f32>) {
            let xt = Tensor::<A, 2>::from_data(TensorData::new(x.to_vec(), [1, p]), &dev).require_grad();
            let t = Tensor::<A, 1>::from_data(TensorData::new(vec![0.4f32], [1]), &dev);
            let loss = model.forward(xt.clone(), t, &spec).square().sum();
            let value = loss.clone().into_scalar();
            let grads = loss.backward();
            let g = xt.grad(&grads).expect("input gradient").into_data().to_vec::<f32>().expect("f32");
            (value, g)
        };
        let (_, grad) = loss_at(&x);
        let h = 1e-2f32;
        for i in 0..p {
            let mut up = x.clone();
            up[i] += h;
            let mut down = x.clone();
            down[i] -= h;
            let numeric = (loss_at(&up).0 - loss_at(&down).0) / (2.0 * h);
            assert!(
                (numeric - grad[i]).abs() < 2e-2 * (1.0 + grad[i].abs()),
                "{attention:?} coordinate {i}: analytic {} numeric {numeric}",
                grad[i]
            );
        }
    }
}
