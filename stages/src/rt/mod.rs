//! The relational transformer over weight graphs (docs/science.md §6): dense as in the thesis,
//! or over the layer blocks of [`pairs`].
//!
//! [`model::RtConfig`] builds a [`model::RelationalTransformer`]; [`graph::GraphSpec`] turns a
//! layout into the dense graph it runs on; [`layer::RtLayer`] is one attention + update layer;
//! [`init::ParamInit`] draws the parameters reproducibly.

pub mod dense;
pub mod fused;
pub mod graph;
pub mod init;
pub mod layer;
pub mod model;
pub mod pairs;
pub mod backward;

/// Forward FLOPs of the relational transformer on one graph of `layout` (docs/science.md
/// §11.2): `M·[L_rt(18dD + 40D) + 8d² + 2dD]` over the `M` kept pairs (`N²` for dense
/// attention), the pair tensors dominating.
pub fn forward_flops(layout: &crate::layout::Layout, attention: pairs::Attention, d: usize, layers: usize) -> f64 {
    let (m, d, width) = (attention.pair_count(layout) as f64, d as f64, (d + 1) as f64);
    m * (layers as f64 * (18.0 * d * width + 40.0 * width) + 8.0 * d * d + 2.0 * d * width)
}
