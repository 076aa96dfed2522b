//! Differentiable canonicalization `canon(θ)` on batches of flat networks (docs/science.md §4.1,
//! §5.6), used on predictions inside the training graph and on prior draws.
//!
//! Layers are processed in order: each hidden neuron's incoming weights are scaled to unit
//! norm, its bias is divided by the same norm and its outgoing weights multiplied by it; the
//! last weight matrix and bias are then divided by the Frobenius norm of the rescaled last
//! matrix (radius ρ = 1). Norms are clamped at [`NORM_FLOOR`] so a collapsed prediction
//! cannot produce NaN (docs/science.md §10.2 item 6, recommended).

use burn::tensor::{backend::Backend, Tensor};

use crate::layout::Layout;

/// Smallest norm a neuron or the last layer may be divided by.
pub const NORM_FLOOR: f64 = 1e-12;
const FLOOR_SQUARED: f64 = NORM_FLOOR * NORM_FLOOR;

/// `canon` of every row of `theta` (`[B, P]`, flat layout) as a `[B, P]` tensor.
pub fn canonicalize<B: Backend>(theta: Tensor<B, 2>, layout: &Layout) -> Tensor<B, 2> {
    let [batch, p] = theta.dims();
    assert_eq!(p, layout.num_params(), "row length must match the layout");
    let n = layout.sizes();
    let depth = layout.num_layers();
    // W_lᵀ blocks as [B, n_{l-1}, n_l] (row = input neuron a, column = output neuron b).
    let mut weights: Vec<Tensor<B, 3>> = (1..=depth)
        .map(|l| {
            let off = layout.weight_offset(l);
            theta
                .clone()
                .slice([0..batch, off..off + n[l - 1] * n[l]])
                .reshape([batch, n[l - 1], n[l]])
        })
        .collect();
    let mut biases: Vec<Tensor<B, 2>> = (1..=depth)
        .map(|l| {
            let off = layout.bias_offset(l);
            theta.clone().slice([0..batch, off..off + n[l]])
        })
        .collect();
    for l in 0..depth - 1 {
        // Incoming norm of each neuron of layer l+1: over the input axis.
        // Clamping the squared norm keeps the gradient of sqrt finite at zero.
        let r = weights[l].clone().square().sum_dim(1).clamp_min(FLOOR_SQUARED).sqrt(); // [B, 1, n]
        weights[l] = weights[l].clone() / r.clone();
        biases[l] = biases[l].clone() / r.clone().reshape([batch, n[l + 1]]);
        let outgoing = r.reshape([batch, n[l + 1], 1]);
        weights[l + 1] = weights[l + 1].clone() * outgoing;
    }
    let last = depth - 1;
    let s = weights[last].clone().square().sum_dim(1).sum_dim(2).clamp_min(FLOOR_SQUARED).sqrt(); // [B,1,1]
    weights[last] = weights[last].clone() / s.clone();
    biases[last] = biases[last].clone() / s.reshape([batch, 1]);
    let mut parts: Vec<Tensor<B, 2>> = weights
        .into_iter()
        .zip(n.windows(2))
        .map(|(w, pair)| w.reshape([batch, pair[0] * pair[1]]))
        .collect();
    parts.extend(biases);
    Tensor::cat(parts, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::ResumableRng;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    /// Forward pass of the ReLU MLP on one input, returning the hidden activations of each
    /// layer and the logits.
    fn forward(layout: &Layout, theta: &[f32], x: &[f32]) -> Vec<Vec<f32>> {
        let n = layout.sizes();
        let mut h = x.to_vec();
        let mut out = Vec::new();
        for l in 1..=layout.num_layers() {
            let w = layout.weight_matrix(theta, l);
            let b = layout.bias(theta, l);
            let mut z: Vec<f32> =
                (0..n[l]).map(|o| b[o] + (0..n[l - 1]).map(|a| w[o * n[l - 1] + a] * h[a]).sum::<f32>()).collect();
            if l < layout.num_layers() {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            out.push(z.clone());
            h = z;
        }
        out
    }

    fn canon_rows(layout: &Layout, rows: &[f32], count: usize) -> Vec<f32> {
        let dev = Default::default();
        let t = Tensor::<B, 2>::from_data(TensorData::new(rows.to_vec(), [count, layout.num_params()]), &dev);
        canonicalize(t, layout).into_data().to_vec::<f32>().expect("f32 tensor")
    }

    #[test]
    fn canon_preserves_hidden_functions_and_scales_logits() {
        let layout = Layout(vec![6, 5, 4, 3]);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(21);
        let theta = rng.normal_vec(p, 0.0, 0.3);
        let c = canon_rows(&layout, &theta, 1);
        let x = rng.normal_vec(6, 0.0, 1.0);
        let before = forward(&layout, &theta, &x);
        let after = forward(&layout, &c, &x);
        // Every hidden neuron only changes by a positive factor (its incoming norm), so
        // what each one computes, and the logits' argmax, are preserved.
        for l in 0..2 {
            for (a, b) in before[l].iter().zip(&after[l]) {
                assert!(a * b >= 0.0 && (*a == 0.0) == (*b == 0.0), "layer {l}: {a} vs {b}");
            }
        }
        let ratio = after[2][0] / before[2][0];
        assert!(ratio > 0.0);
        for (a, b) in before[2].iter().zip(&after[2]) {
            assert!((b - ratio * a).abs() < 1e-4 * (1.0 + a.abs()), "{a} {b} {ratio}");
        }
        // Unit spheres: every hidden row and the last matrix.
        let geo = crate::geometry::product::ProductGeometry::new(&layout);
        assert!(geo.max_norm_error(&c) < 1e-5);
        // Idempotent.
        let twice = canon_rows(&layout, &c, 1);
        for (a, b) in c.iter().zip(&twice) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn canon_is_differentiable_and_finite_at_zero() {
        use burn::backend::Autodiff;
        type A = Autodiff<NdArray<f32>>;
        let layout = Layout(vec![3, 2, 2]);
        let dev = Default::default();
        let theta = Tensor::<A, 2>::zeros([2, layout.num_params()], &dev).require_grad();
        let out = canonicalize(theta.clone(), &layout);
        let grads = out.sum().backward();
        let g = theta.grad(&grads).expect("gradient").into_data().to_vec::<f32>().expect("f32");
        assert!(g.iter().all(|v| v.is_finite()));
    }
}
