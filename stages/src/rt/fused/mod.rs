//! A hand-fused CPU implementation of the relational transformer: the same model as
//! [`crate::rt::model::RelationalTransformer`], forward and backward written directly on
//! `f32` buffers.
//!
//! Why it exists: through a general tensor library on the CPU, every elementwise step of
//! the N² pair tensors allocates a fresh multi-megabyte buffer (page faults, kernel page
//! clearing) and records an autodiff node; the model ran at about 2 GFLOP/s. Here each
//! network of a batch is one task: its dense `[N², D]` tensors stay in a [`Tape`] reused
//! across iterations, products go through `matrixmultiply`, and the samples of a batch run
//! in parallel with rayon. Results are deterministic: each sample is computed by one thread
//! and per-sample gradients are summed in batch order.
//!
//! The burn module stays the model of record (its file format, its CUDA path); this engine
//! reads and writes its parameters through [`params::export`] / [`params::import`], and the
//! tests hold it to the burn model's outputs and gradients.

mod backward;
mod forward;
pub mod kernels;
pub mod params;

use std::cell::RefCell;

use burn::tensor::backend::Backend;
use rayon::prelude::*;

pub use forward::Tape;
use params::ParamMap;

use super::graph::GraphSpec;
use super::model::{RelationalTransformer, RtConfig};

/// The layout-dependent index tables of a graph's kept pairs (all `N²` for dense
/// attention; see [`crate::rt::pairs`]).
#[derive(Clone, Debug)]
pub struct FusedGraph {
    pub nodes: usize,
    pub inputs: usize,
    /// Flat parameter count of the layout.
    pub params: usize,
    /// Number of pairs with an edge state.
    pub pairs: usize,
    /// Source node `i`, target node `j` and the index of pair `(j, i)`, per pair.
    pub source: Vec<u32>,
    pub target: Vec<u32>,
    pub reverse: Vec<u32>,
    /// The pairs node `i` attends over: `attend[attend_start[i]..attend_start[i + 1]]`
    /// (all of its pairs; a subset only for the masked reference in the tests).
    pub attend_start: Vec<u32>,
    pub attend: Vec<u32>,
    /// Pair index of each structural weight, in flat weight order.
    pub structural: Vec<u32>,
    /// Per pair: the structural weight it carries, or `structural.len()` for zero pairs.
    pub pair_source: Vec<u32>,
    pub pos_row: Vec<usize>,
    pub node_fixed: Vec<bool>,
    /// Per pair.
    pub edge_fixed: Vec<bool>,
}

impl FusedGraph {
    pub fn new(spec: &GraphSpec) -> Self {
        let pairs = &spec.pairs;
        FusedGraph {
            nodes: spec.nodes,
            inputs: spec.layout.inputs(),
            params: spec.layout.num_params(),
            pairs: pairs.len(),
            source: pairs.source.clone(),
            target: pairs.target.clone(),
            reverse: pairs.reverse.clone(),
            attend_start: pairs.row_start.clone(),
            attend: (0..pairs.len() as u32).collect(),
            structural: pairs.structural.clone(),
            pair_source: pairs.weight.clone(),
            pos_row: spec.pos_row.iter().map(|&r| r as usize).collect(),
            node_fixed: spec.node_fixed.iter().map(|&f| f != 0.0).collect(),
            edge_fixed: spec.edge_fixed.iter().map(|&f| f != 0.0).collect(),
        }
    }
}

/// The relational transformer's parameters in one arena, with the fused forward and
/// backward passes.
#[derive(Clone, Debug)]
pub struct FusedRt {
    pub map: ParamMap,
    pub params: Vec<f32>,
}

thread_local! {
    static INFERENCE_TAPE: RefCell<Option<Tape>> = const { RefCell::new(None) };
}

impl FusedRt {
    pub fn from_model<B: Backend>(model: &RelationalTransformer<B>, config: &RtConfig) -> Self {
        let map = ParamMap::new(config);
        let params = params::export(model, &map);
        FusedRt { map, params }
    }

    /// `template` (same config) carrying this engine's parameter values.
    pub fn to_model<B: Backend>(&self, template: RelationalTransformer<B>) -> RelationalTransformer<B> {
        params::import(template, &self.map, &self.params)
    }

    fn check_batch(&self, graph: &FusedGraph, x: &[f32], t: &[f32]) {
        assert_eq!(x.len(), t.len() * graph.params, "x must be [B, P] with B = t.len()");
        assert!(graph.pos_row.iter().all(|&r| r < self.map.pos_rows), "graph needs more positional rows than the model has");
        assert!(self.map.offset.is_none_or(|at| self.map.len - at == graph.params), "the readout offset's length is not the layout's P");
    }

    /// Predictions `[B, P]` for networks `x` `[B, P]` at times `t` `[B]`, without
    /// gradients; samples run in parallel.
    pub fn predict(&self, graph: &FusedGraph, x: &[f32], t: &[f32]) -> Vec<f32> {
        self.check_batch(graph, x, t);
        let p = graph.params;
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(p).zip(x.par_chunks(p)).zip(t.par_iter()).for_each(|((out, x), &t)| {
            INFERENCE_TAPE.with(|cell| {
                let mut slot = cell.borrow_mut();
                if !slot.as_ref().is_some_and(|tape| tape.fits(&self.map, graph)) {
                    *slot = Some(Tape::new(&self.map, graph));
                }
                let tape = slot.as_mut().expect("tape allocated");
                forward::forward(&self.params, &self.map, graph, x, t, tape, out);
            });
        });
        out
    }

    /// Like [`FusedRt::predict`], keeping one [`Tape`] per sample in `tapes` (allocated on
    /// first use, reused afterwards) for [`FusedRt::backward`].
    pub fn forward_taped(&self, graph: &FusedGraph, x: &[f32], t: &[f32], tapes: &mut Vec<Tape>) -> Vec<f32> {
        self.check_batch(graph, x, t);
        let p = graph.params;
        tapes.truncate(t.len());
        tapes.retain(|tape| tape.fits(&self.map, graph));
        while tapes.len() < t.len() {
            tapes.push(Tape::new(&self.map, graph));
        }
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(p).zip(x.par_chunks(p)).zip(t.par_iter()).zip(tapes.par_iter_mut()).for_each(
            |(((out, x), &t), tape)| forward::forward(&self.params, &self.map, graph, x, t, tape, out),
        );
        out
    }

    /// The parameter gradient of `Σ_b ⟨dout_b, f(x_b, t_b)⟩`, from the tapes of the last
    /// [`FusedRt::forward_taped`].
    pub fn backward(&self, graph: &FusedGraph, tapes: &mut [Tape], dout: &[f32]) -> Vec<f32> {
        let p = graph.params;
        assert_eq!(dout.len(), tapes.len() * p, "dout must be [B, P] for the taped batch");
        let per_sample: Vec<Vec<f32>> = tapes
            .par_iter_mut()
            .zip(dout.par_chunks(p))
            .map(|(tape, dout)| {
                let mut grads = vec![0.0f32; self.map.len];
                backward::backward(&self.params, &self.map, graph, tape, dout, &mut grads);
                grads
            })
            .collect();
        let mut total = vec![0.0f32; self.map.len];
        for grads in &per_sample {
            for (t, g) in total.iter_mut().zip(grads) {
                *t += g;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::noise::ResumableRng;
    use crate::rt::graph::TimeChannel;
    use crate::rt::pairs::Attention;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::{Tensor, TensorData};

    type A = Autodiff<NdArray<f32>>;

    fn setup(layout: &Layout, d: usize, layers: usize, heads: usize, time: TimeChannel) -> (RtConfig, RelationalTransformer<A>, GraphSpec) {
        setup_with(layout, d, layers, heads, time, Attention::Dense)
    }

    fn setup_with(
        layout: &Layout,
        d: usize,
        layers: usize,
        heads: usize,
        time: TimeChannel,
        attention: Attention,
    ) -> (RtConfig, RelationalTransformer<A>, GraphSpec) {
        let config = RtConfig::for_layout(layout, d, layers, heads);
        let model = config.init::<A>(3, &Default::default());
        (config, model, GraphSpec::new(layout, time, attention))
    }

    /// The dense graph of `layout` with each node attending only over the pairs that
    /// `attention` keeps: every pair still carries a state, the others get softmax weight 0.
    fn masked_dense(layout: &Layout, time: TimeChannel, attention: Attention) -> FusedGraph {
        let mut graph = FusedGraph::new(&GraphSpec::new(layout, time, Attention::Dense));
        let kept = crate::rt::pairs::Pairs::new(layout, attention);
        let n = graph.nodes;
        graph.attend = kept.source.iter().zip(&kept.target).map(|(&i, &j)| i * n as u32 + j).collect();
        graph.attend_start = kept.row_start.clone();
        graph
    }

    #[test]
    fn layer_blocks_equal_the_masked_dense_engine() {
        for (layout, heads, time) in [
            (Layout(vec![3, 4, 2]), 1, TimeChannel::Faithful),
            (Layout(vec![4, 3, 5, 2]), 2, TimeChannel::WeightEdges),
        ] {
            let (config, model, spec) = setup_with(&layout, 8, 2, heads, time, Attention::LayerBlocks);
            let fused = FusedRt::from_model(&model, &config);
            let sparse = FusedGraph::new(&spec);
            let masked = masked_dense(&layout, time, Attention::LayerBlocks);
            let p = layout.num_params();
            let mut rng = ResumableRng::seed_from(21);
            let x = rng.normal_vec(3 * p, 0.0, 0.7);
            let dout = rng.normal_vec(3 * p, 0.0, 1.0);
            let t = [0.15f32, 0.5, 0.95];
            let (mut ts, mut tm) = (Vec::new(), Vec::new());
            let ys = fused.forward_taped(&sparse, &x, &t, &mut ts);
            let ym = fused.forward_taped(&masked, &x, &t, &mut tm);
            close(&ys, &ym, 1e-5, &format!("{layout} output"));
            let gs = fused.backward(&sparse, &mut ts, &dout);
            let gm = fused.backward(&masked, &mut tm, &dout);
            close(&gs, &gm, 1e-5, &format!("{layout} gradient"));
            let yd = fused.predict(&FusedGraph::new(&GraphSpec::new(&layout, time, Attention::Dense)), &x, &t);
            assert!(ys.iter().zip(&yd).any(|(a, b)| (a - b).abs() > 1e-3), "{layout}: the mask changes nothing");
        }
    }

    #[test]
    fn the_layer_block_tape_grows_with_the_kept_pairs_not_with_n_squared() {
        let layout = Layout(vec![784, 10, 10]);
        let config = RtConfig::for_layout(&layout, 8, 2, 1);
        let map = ParamMap::new(&config);
        let graph = FusedGraph::new(&GraphSpec::new(&layout, TimeChannel::Faithful, Attention::LayerBlocks));
        let n = graph.nodes;
        assert_eq!(graph.pairs, 16_684);
        let floats = Tape::new(&map, &graph).floats();
        // A dense tape holds more than 200 floats per pair (N² pairs); this one under 16·N².
        assert!(floats < 16 * n * n, "{floats} floats for {n} nodes");
        assert!(floats < 400 * graph.pairs, "{floats} floats for {} pairs", graph.pairs);
    }

    fn burn_forward(model: &RelationalTransformer<A>, spec: &GraphSpec, x: &[f32], t: &[f32]) -> Tensor<A, 2> {
        let dev = Default::default();
        let p = spec.layout.num_params();
        model.forward(crate::rows::rows_tensor::<A>(x, p, &dev), crate::rows::column_tensor::<A>(t, &dev), spec)
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}[{i}]: fused {x} vs burn {y} (scale {scale})");
        }
    }

    #[test]
    fn the_arena_round_trips_the_burn_model() {
        let layout = Layout(vec![3, 4, 2]);
        let (config, model, _) = setup(&layout, 8, 2, 2, TimeChannel::Faithful);
        let fused = FusedRt::from_model(&model, &config);
        assert_eq!(fused.map.len, model.num_params());
        let mut shifted = fused.clone();
        shifted.params.iter_mut().for_each(|v| *v += 1.0);
        let back = FusedRt::from_model(&shifted.to_model(model.clone()), &config);
        assert_eq!(back.params, shifted.params);
        // ids are kept, so the record bytes of an unchanged model are unchanged
        let same = fused.to_model(model.clone());
        assert_eq!(crate::flow::train::model_bytes(&same).unwrap(), crate::flow::train::model_bytes(&model).unwrap());
    }

    #[test]
    fn forward_matches_the_burn_model() {
        for (layout, d, layers, heads, time, attention) in [
            (Layout(vec![3, 4, 2]), 8, 2, 1, TimeChannel::Faithful, Attention::Dense),
            (Layout(vec![4, 3, 3, 2]), 8, 2, 2, TimeChannel::WeightEdges, Attention::Dense),
            (Layout(vec![30, 16, 16, 2]), 16, 1, 1, TimeChannel::Everywhere, Attention::Dense),
            (Layout(vec![4, 3, 3, 2]), 8, 2, 2, TimeChannel::Faithful, Attention::LayerBlocks),
            (Layout(vec![30, 16, 16, 2]), 16, 1, 1, TimeChannel::WeightEdges, Attention::LayerBlocks),
        ] {
            let (config, model, spec) = setup_with(&layout, d, layers, heads, time, attention);
            let p = layout.num_params();
            let x = ResumableRng::seed_from(4).normal_vec(3 * p, 0.0, 0.7);
            let t = [0.1f32, 0.55, 0.9];
            let want = burn_forward(&model, &spec, &x, &t).into_data().to_vec::<f32>().unwrap();
            let fused = FusedRt::from_model(&model, &config);
            let graph = FusedGraph::new(&spec);
            let got = fused.predict(&graph, &x, &t);
            close(&got, &want, 2e-4, &format!("forward {layout}"));
            let mut tapes = Vec::new();
            assert_eq!(fused.forward_taped(&graph, &x, &t, &mut tapes), got, "taped and untaped forward agree");
        }
    }

    /// Parameter gradients of the burn model, in arena order.
    fn burn_gradients(model: &RelationalTransformer<A>, spec: &GraphSpec, x: &[f32], t: &[f32], dout: &[f32], map: &ParamMap) -> Vec<f32> {
        struct Collect<'g> {
            grads: &'g <A as burn::tensor::backend::AutodiffBackend>::Gradients,
            map: &'g ParamMap,
            out: Vec<f32>,
            next: usize,
        }
        impl ModuleVisitor<A> for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let (offset, len) = self.map.tensors[self.next];
                self.next += 1;
                if let Some(g) = param.val().grad(self.grads) {
                    let g = g.into_data().to_vec::<f32>().unwrap();
                    self.out[offset..offset + len].copy_from_slice(&g);
                }
            }
        }
        let p = spec.layout.num_params();
        let y = burn_forward(model, spec, x, t);
        let w = Tensor::<A, 2>::from_data(TensorData::new(dout.to_vec(), [t.len(), p]), &Default::default());
        let grads = (y * w).sum().backward();
        let mut c = Collect { grads: &grads, map, out: vec![0.0; map.len], next: 0 };
        model.visit(&mut c);
        c.out
    }

    #[test]
    fn gradients_match_burn_autodiff() {
        for (layout, d, layers, heads, time, attention) in [
            (Layout(vec![3, 4, 2]), 8, 2, 1, TimeChannel::Faithful, Attention::Dense),
            (Layout(vec![4, 3, 3, 2]), 8, 2, 2, TimeChannel::WeightEdges, Attention::Dense),
            (Layout(vec![4, 3, 5, 2]), 8, 2, 2, TimeChannel::Everywhere, Attention::LayerBlocks),
            (Layout(vec![3, 4, 2]), 8, 2, 2, TimeChannel::Faithful, Attention::LayerBlocks),
        ] {
            let (config, model, spec) = setup_with(&layout, d, layers, heads, time, attention);
            let p = layout.num_params();
            let mut rng = ResumableRng::seed_from(8);
            let x = rng.normal_vec(2 * p, 0.0, 0.7);
            let dout = rng.normal_vec(2 * p, 0.0, 1.0);
            let t = [0.3f32, 0.8];
            let fused = FusedRt::from_model(&model, &config);
            let want = burn_gradients(&model, &spec, &x, &t, &dout, &fused.map);
            let graph = FusedGraph::new(&spec);
            let mut tapes = Vec::new();
            fused.forward_taped(&graph, &x, &t, &mut tapes);
            let got = fused.backward(&graph, &mut tapes, &dout);
            // Compared tensor by tensor so a failure names the parameter. burn's GELU
            // backward uses the derivative of the tanh approximation, not of the exact GELU
            // its forward computes, which moves its gradients by ~1e-3 relative; the fused
            // gradient is exact (see `gradient_matches_finite_differences`).
            for (k, &(offset, len)) in fused.map.tensors.iter().enumerate() {
                close(&got[offset..offset + len], &want[offset..offset + len], 4e-3, &format!("{layout} tensor {k}"));
            }
        }
    }

    #[test]
    fn per_neuron_positions_match_burn() {
        per_neuron_case(false);
    }

    #[test]
    fn the_readout_offset_matches_burn() {
        per_neuron_case(true);
    }

    /// Per-neuron rows, with or without a readout offset (drawn non-zero, so it shows).
    fn per_neuron_case(with_offset: bool) {
        use crate::rt::graph::Positions;
        let layout = Layout(vec![4, 3, 5, 2]);
        let config = RtConfig::for_layout(&layout, 8, 2, 2).with_positions(&layout, Positions::PerNeuron).with_offset(&layout, with_offset);
        let spec = GraphSpec::new(&layout, TimeChannel::Faithful, Attention::LayerBlocks).with_positions(Positions::PerNeuron);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(5);
        let x = rng.normal_vec(2 * p, 0.0, 0.7);
        let dout = rng.normal_vec(2 * p, 0.0, 1.0);
        let t = [0.2f32, 0.9];
        let mut fused = FusedRt::from_model(&config.init::<A>(3, &Default::default()), &config);
        assert_eq!(fused.map.offset.is_some(), with_offset);
        if let Some(at) = fused.map.offset {
            assert!(fused.params[at..].iter().all(|&b| b == 0.0), "the offset starts at zero");
            fused.params[at..].copy_from_slice(&rng.normal_vec(p, 0.0, 1.0));
        }
        let model = fused.to_model(config.init::<A>(3, &Default::default()));
        let graph = FusedGraph::new(&spec);
        let want = burn_forward(&model, &spec, &x, &t).into_data().to_vec::<f32>().unwrap();
        let mut tapes = Vec::new();
        close(&fused.forward_taped(&graph, &x, &t, &mut tapes), &want, 2e-4, "per-neuron forward");
        let got = fused.backward(&graph, &mut tapes, &dout);
        let want = burn_gradients(&model, &spec, &x, &t, &dout, &fused.map);
        for (k, &(offset, len)) in fused.map.tensors.iter().enumerate() {
            close(&got[offset..offset + len], &want[offset..offset + len], 4e-3, &format!("per-neuron tensor {k}"));
        }
        if let Some(at) = fused.map.offset {
            // The offset's gradient is dout summed over the batch.
            for k in 0..p {
                assert!((got[at + k] - (dout[k] + dout[p + k])).abs() < 1e-5, "offset gradient {k}");
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for attention in [Attention::Dense, Attention::LayerBlocks] {
            parameter_gradient_matches_finite_differences(attention);
        }
    }

    fn parameter_gradient_matches_finite_differences(attention: Attention) {
        let layout = Layout(vec![3, 4, 2]);
        let (config, model, spec) = setup_with(&layout, 8, 2, 2, TimeChannel::Faithful, attention);
        let mut fused = FusedRt::from_model(&model, &config);
        let graph = FusedGraph::new(&spec);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(12);
        let x = rng.normal_vec(2 * p, 0.0, 0.7);
        let dout = rng.normal_vec(2 * p, 0.0, 1.0);
        let t = [0.25f32, 0.75];
        let mut tapes = Vec::new();
        fused.forward_taped(&graph, &x, &t, &mut tapes);
        let grads = fused.backward(&graph, &mut tapes, &dout);
        let objective = |f: &FusedRt| -> f64 {
            f.predict(&graph, &x, &t).iter().zip(&dout).map(|(y, w)| f64::from(y * w)).sum()
        };
        let base = fused.params.clone();
        let at_base = objective(&fused);
        let close = |numeric: f64, analytic: f64| (numeric - analytic).abs() < 2e-3 + 3e-2 * analytic.abs();
        // (central, left, right) difference quotients at step h.
        let mut slopes = |i: usize, h: f32| -> [f64; 3] {
            fused.params = base.clone();
            fused.params[i] += h;
            let up = objective(&fused);
            fused.params[i] -= 2.0 * h;
            let down = objective(&fused);
            let h = f64::from(h);
            [(up - down) / (2.0 * h), (at_base - down) / h, (up - at_base) / h]
        };
        // The output heads are ReLU MLPs: a pre-activation within a step of 0 puts a kink
        // inside the central difference (the layer-block model has many: at a step of 2e-3
        // a quarter of its coordinates miss, converging as the step shrinks). A coordinate that misses is retried with smaller
        // steps and one-sided differences (the side without the kink has the gradient's
        // slope); each retry is counted. f32 noise limits how small a step can be.
        let mut retried = 0;
        for (k, &(offset, len)) in ParamMap::new(&config).tensors.iter().enumerate() {
            for i in [offset, offset + len / 2, offset + len - 1] {
                let analytic = f64::from(grads[i]);
                let [central, ..] = slopes(i, 5e-4);
                if close(central, analytic) {
                    continue;
                }
                retried += 1;
                let tried: Vec<[f64; 3]> = [2.5e-4f32, 1.25e-4].iter().map(|&h| slopes(i, h)).collect();
                assert!(
                    tried.iter().flatten().any(|&numeric| close(numeric, analytic)),
                    "{attention:?} tensor {k} index {i}: analytic {analytic}, numeric {central}, then (central, left, right) {tried:?}"
                );
            }
        }
        assert!(retried <= 3, "{attention:?}: {retried} coordinates needed a smaller step");
    }

    #[test]
    fn batches_are_deterministic_and_rows_independent() {
        let layout = Layout(vec![3, 4, 2]);
        let (config, model, spec) = setup(&layout, 8, 2, 1, TimeChannel::Faithful);
        let fused = FusedRt::from_model(&model, &config);
        let graph = FusedGraph::new(&spec);
        let p = layout.num_params();
        let x = ResumableRng::seed_from(1).normal_vec(5 * p, 0.0, 1.0);
        let t = [0.1f32, 0.2, 0.3, 0.4, 0.5];
        let all = fused.predict(&graph, &x, &t);
        assert_eq!(all, fused.predict(&graph, &x, &t));
        let one = fused.predict(&graph, &x[2 * p..3 * p], &t[2..3]);
        assert_eq!(&all[2 * p..3 * p], &one[..]);
        let dout = vec![1.0f32; 5 * p];
        let mut tapes = Vec::new();
        fused.forward_taped(&graph, &x, &t, &mut tapes);
        let g1 = fused.backward(&graph, &mut tapes, &dout);
        fused.forward_taped(&graph, &x, &t, &mut tapes);
        let g2 = fused.backward(&graph, &mut tapes, &dout);
        assert_eq!(g1, g2);
    }
}
