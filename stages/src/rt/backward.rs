//! The burn module's training step, backpropagated one RT layer at a time, with optional
//! per-layer recomputation (activation checkpointing, docs/science.md §11.3).
//!
//! The forward pass runs each layer on graph leaves that hold its input states, so the
//! model's graph is one graph per layer, chained in the backward pass by the seam
//! `Σ out ⊙ g`, which gives each layer's output exactly the gradient `g` of the layer above
//! (the gradient of a sum is 1, and `1 · g = g`).
//!
//! With `recompute` the forward pass runs the layers without a graph and keeps only each
//! layer's input states; the backward pass rebuilds one layer's graph at a time, from the
//! last. Autodiff would otherwise keep every layer's intermediate tensors until the end (for
//! the dense MNIST graph about 14 GB per layer at d_E 32, batch 8); now memory holds the
//! embedding's graph, the `L + 1` states and one layer's graph, for one more forward pass of
//! the layers. Each layer's graph is the same graph either way, so both give the same bytes.
//! Against one graph over the whole model the gradients agree to rounding: burn sums the
//! gradient contributions of a tensor in its traversal order, which the seams change.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

use super::graph::GraphSpec;
use super::layer::{PairIndex, RtLayer};
use super::model::RelationalTransformer;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

impl<B: AutodiffBackend> RelationalTransformer<B> {
    /// `loss(forward(x, t))` and, when it is finite, the gradient of every parameter, with
    /// the layers' activations kept or, with `recompute`, recomputed in the backward pass.
    pub fn loss_and_gradients(
        &self,
        x: Tensor<B, 2>,
        t: Tensor<B, 1>,
        spec: &GraphSpec,
        recompute: bool,
        loss: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 1>,
    ) -> (f64, Option<GradientsParams>) {
        if spec.attention.is_dense() {
            let states = self.embed_dense(&x, &t, spec);
            by_layers(self, states, &Dense, recompute, |nodes, edges| loss(self.readout(nodes, spec.structural_edges(edges), spec)))
        } else {
            let device = x.device();
            let pairs = KeptPairs::<B> { tracked: PairIndex::new(&spec.pairs, &device), untracked: PairIndex::new(&spec.pairs, &device) };
            let states = self.embed_pairs(&x, &t, spec);
            by_layers(self, states, &pairs, recompute, |nodes, edges| loss(self.readout(nodes, spec.structural_pairs(edges), spec)))
        }
    }
}

/// One layer on the autodiff backend (tracked) or on its inner backend (no graph); edges
/// have rank `E`: 4 for dense `[B, N, N, D]`, 3 for kept pairs `[B, M, D]`.
trait LayerStep<B: AutodiffBackend, const E: usize> {
    fn tracked(&self, layer: &RtLayer<B>, nodes: Tensor<B, 3>, edges: Tensor<B, E>) -> (Tensor<B, 3>, Tensor<B, E>);
    fn untracked(
        &self,
        layer: &RtLayer<Inner<B>>,
        nodes: Tensor<Inner<B>, 3>,
        edges: Tensor<Inner<B>, E>,
    ) -> (Tensor<Inner<B>, 3>, Tensor<Inner<B>, E>);
}

struct Dense;

impl<B: AutodiffBackend> LayerStep<B, 4> for Dense {
    fn tracked(&self, layer: &RtLayer<B>, nodes: Tensor<B, 3>, edges: Tensor<B, 4>) -> (Tensor<B, 3>, Tensor<B, 4>) {
        layer.forward(nodes, edges, None)
    }
    fn untracked(
        &self,
        layer: &RtLayer<Inner<B>>,
        nodes: Tensor<Inner<B>, 3>,
        edges: Tensor<Inner<B>, 4>,
    ) -> (Tensor<Inner<B>, 3>, Tensor<Inner<B>, 4>) {
        layer.forward(nodes, edges, None)
    }
}

struct KeptPairs<B: AutodiffBackend> {
    tracked: PairIndex<B>,
    untracked: PairIndex<Inner<B>>,
}

impl<B: AutodiffBackend> LayerStep<B, 3> for KeptPairs<B> {
    fn tracked(&self, layer: &RtLayer<B>, nodes: Tensor<B, 3>, edges: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        layer.forward_pairs(nodes, edges, &self.tracked)
    }
    fn untracked(
        &self,
        layer: &RtLayer<Inner<B>>,
        nodes: Tensor<Inner<B>, 3>,
        edges: Tensor<Inner<B>, 3>,
    ) -> (Tensor<Inner<B>, 3>, Tensor<Inner<B>, 3>) {
        layer.forward_pairs(nodes, edges, &self.untracked)
    }
}

/// The step of [`RelationalTransformer::loss_and_gradients`] from the embedded states (on
/// the autodiff graph) on: the layers, then `finish` (readout and loss).
fn by_layers<B: AutodiffBackend, const E: usize>(
    model: &RelationalTransformer<B>,
    (nodes, edges): (Tensor<B, 3>, Tensor<B, E>),
    step: &impl LayerStep<B, E>,
    recompute: bool,
    finish: impl FnOnce(Tensor<B, 3>, Tensor<B, E>) -> Tensor<B, 1>,
) -> (f64, Option<GradientsParams>) {
    let untracked = recompute.then(|| model.valid());
    let mut kept = Vec::with_capacity(model.layers.len());
    let mut state = (nodes.clone().inner(), edges.clone().inner());
    for (l, layer) in model.layers.iter().enumerate() {
        let (keep, next) = match &untracked {
            Some(untracked) => {
                let next = step.untracked(&untracked.layers[l], state.0.clone(), state.1.clone());
                (Kept::Input(state), next)
            }
            None => {
                let input = leaves(state);
                let output = step.tracked(layer, input.0.clone(), input.1.clone());
                let next = (output.0.clone().inner(), output.1.clone().inner());
                (Kept::Graph { input, output }, next)
            }
        };
        kept.push(keep);
        state = next;
    }
    drop(untracked);

    let (top_nodes, top_edges) = leaves(state);
    let loss = finish(top_nodes.clone(), top_edges.clone());
    let value: f64 = loss.clone().into_scalar().elem();
    if !value.is_finite() {
        return (value, None);
    }
    let mut total = GradientsParams::new();
    let mut grads = loss.backward();
    collect(model, &mut grads, &mut total);
    let mut seam = (grad(&top_nodes, &grads), grad(&top_edges, &grads));
    for (layer, keep) in model.layers.iter().zip(kept).rev() {
        let (input, (out_nodes, out_edges)) = match keep {
            Kept::Graph { input, output } => (input, output),
            Kept::Input(states) => {
                let input = leaves(states);
                let output = step.tracked(layer, input.0.clone(), input.1.clone());
                (input, output)
            }
        };
        let mut grads = chain(out_nodes, out_edges, seam).backward();
        collect(model, &mut grads, &mut total);
        seam = (grad(&input.0, &grads), grad(&input.1, &grads));
    }
    let mut grads = chain(nodes, edges, seam).backward();
    collect(model, &mut grads, &mut total);
    (value, Some(total))
}

/// What the forward pass keeps of one layer for the backward pass.
enum Kept<B: AutodiffBackend, const E: usize> {
    /// Its graph: the input leaves and the outputs.
    Graph { input: (Tensor<B, 3>, Tensor<B, E>), output: (Tensor<B, 3>, Tensor<B, E>) },
    /// Only its input states, to rebuild the graph from.
    Input((Tensor<Inner<B>, 3>, Tensor<Inner<B>, E>)),
}

/// Fresh graph leaves holding `states`.
fn leaves<B: AutodiffBackend, const E: usize>(
    (nodes, edges): (Tensor<Inner<B>, 3>, Tensor<Inner<B>, E>),
) -> (Tensor<B, 3>, Tensor<B, E>) {
    (Tensor::from_inner(nodes).require_grad(), Tensor::from_inner(edges).require_grad())
}

/// The gradient of `x` in `grads` (zeros where the loss does not depend on it).
fn grad<B: AutodiffBackend, const D: usize>(x: &Tensor<B, D>, grads: &B::Gradients) -> Tensor<Inner<B>, D> {
    x.grad(grads).unwrap_or_else(|| x.clone().inner().zeros_like())
}

/// `Σ nodes ⊙ g_nodes + Σ edges ⊙ g_edges`, whose backward pass sends exactly the
/// gradients of the layer above into the graph that produced `nodes` and `edges`.
fn chain<B: AutodiffBackend, const E: usize>(
    nodes: Tensor<B, 3>,
    edges: Tensor<B, E>,
    (g_nodes, g_edges): (Tensor<Inner<B>, 3>, Tensor<Inner<B>, E>),
) -> Tensor<B, 1> {
    (nodes * Tensor::from_inner(g_nodes)).sum() + (edges * Tensor::from_inner(g_edges)).sum()
}

/// Moves the parameter gradients present in `grads` into `total`.
fn collect<B: AutodiffBackend>(model: &RelationalTransformer<B>, grads: &mut B::Gradients, total: &mut GradientsParams) {
    struct Collect<'g, B: AutodiffBackend> {
        grads: &'g mut B::Gradients,
        total: &'g mut GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = param.val().grad_remove(self.grads) {
                self.total.register::<Inner<B>, D>(param.id, g);
            }
        }
    }
    model.visit(&mut Collect { grads, total });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::noise::ResumableRng;
    use crate::rt::graph::TimeChannel;
    use crate::rt::model::RtConfig;
    use crate::rt::pairs::Attention;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type A = Autodiff<NdArray<f32>>;

    /// Every parameter's gradient, in visiting order, as bits.
    fn bits(model: &RelationalTransformer<A>, grads: &GradientsParams) -> Vec<u32> {
        struct Flat<'g>(&'g GradientsParams, Vec<u32>);
        impl ModuleVisitor<A> for Flat<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
                let g = self.0.get::<NdArray<f32>, D>(param.id).map(|g| g.into_data().to_vec::<f32>().expect("f32"));
                let g = g.unwrap_or_else(|| vec![0.0; param.val().shape().num_elements()]);
                self.1.extend(g.iter().map(|v| v.to_bits()));
            }
        }
        let mut flat = Flat(grads, Vec::new());
        model.visit(&mut flat);
        flat.1
    }

    #[test]
    fn recomputed_gradients_are_the_kept_graphs_bits_and_one_graphs_to_rounding() {
        for (layout, attention, layers) in [
            (Layout(vec![3, 4, 2]), Attention::Dense, 3),
            (Layout(vec![4, 3, 5, 2]), Attention::LayerBlocks, 2),
            (Layout(vec![2, 3, 3, 3, 1]), Attention::Dense, 1),
        ] {
            let dev = Default::default();
            let model = RtConfig::for_layout(&layout, 8, layers, 2).init::<A>(4, &dev);
            let spec = GraphSpec::new(&layout, TimeChannel::Faithful, attention);
            let p = layout.num_params();
            let mut rng = ResumableRng::seed_from(8);
            let tensor = |v: Vec<f32>| Tensor::<A, 2>::from_data(TensorData::new(v, [3, p]), &dev);
            let (x, target) = (tensor(rng.normal_vec(3 * p, 0.0, 0.7)), tensor(rng.normal_vec(3 * p, 0.0, 1.0)));
            let t = Tensor::<A, 1>::from_data(TensorData::new(vec![0.1f32, 0.6, 0.95], [3]), &dev);
            let loss = |out: Tensor<A, 2>| (out - target.clone()).square().mean();
            let by_layers = |recompute: bool| {
                let (value, grads) = model.loss_and_gradients(x.clone(), t.clone(), &spec, recompute, loss);
                let grads = grads.expect("a finite loss has gradients");
                (value.to_bits(), bits(&model, &grads), grads.len())
            };
            let (kept, recomputed) = (by_layers(false), by_layers(true));
            assert_eq!(kept.0, recomputed.0, "{layout} {attention:?}: loss");
            let differing = kept.1.iter().zip(&recomputed.1).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{layout} {attention:?}: {differing} of {} gradient entries differ", kept.1.len());
            assert_eq!(kept.1.len(), model.num_params());

            let whole = loss(model.forward(x.clone(), t.clone(), &spec));
            assert_eq!(f64::from(whole.clone().into_scalar()).to_bits(), kept.0, "{layout}: the loss of one graph");
            let whole = GradientsParams::from_grads(whole.backward(), &model);
            assert_eq!(kept.2, whole.len(), "{layout}: the same parameters have a gradient");
            let whole = bits(&model, &whole);
            let scale = whole.iter().map(|&b| f32::from_bits(b).abs()).fold(0.0f32, f32::max);
            assert!(scale > 0.0, "gradients are not all zero");
            for (a, b) in whole.iter().zip(&kept.1) {
                let (a, b) = (f32::from_bits(*a), f32::from_bits(*b));
                assert!((a - b).abs() <= 1e-6 * scale, "{layout} {attention:?}: {a} vs {b} (one graph vs by layers)");
            }
        }
    }

    #[test]
    fn a_non_finite_loss_gives_no_gradients() {
        let layout = Layout(vec![3, 4, 2]);
        let dev = Default::default();
        let model = RtConfig::for_layout(&layout, 4, 2, 1).init::<A>(1, &dev);
        let spec = GraphSpec::new(&layout, TimeChannel::Faithful, Attention::Dense);
        let p = layout.num_params();
        let x = Tensor::<A, 2>::from_data(TensorData::new(vec![0.1f32; p], [1, p]), &dev);
        let t = Tensor::<A, 1>::from_data(TensorData::new(vec![0.5f32], [1]), &dev);
        let (value, grads) = model.loss_and_gradients(x, t, &spec, true, |out| out.sum() / 0.0);
        assert!(!value.is_finite());
        assert!(grads.is_none());
    }
}
