//! Target-mode losses (docs/science.md §5.7) on `[B, P]` tensors, differentiable.
//!
//! Euclidean and Normalized: plain MSE over all coordinates. Geometric
//! (`sphere_point_dist`): per network, the mean over weight blocks of the mean squared
//! clamped geodesic distance of the block's sphere points, plus the bias MSE; then the mean
//! over the batch. The clamp gives every sphere point a floor of acos(1 − 1e-4) ≈ 0.01414
//! and a zero gradient within it, as geoopt does.

use burn::tensor::{backend::Backend, Tensor};

use crate::geometry::{sphere::EPS, Geometry};
use crate::layout::Layout;

/// The loss for `geometry`: `[B, P]` prediction and target → scalar `[1]`.
pub fn flow_loss<B: Backend>(geometry: Geometry, pred: Tensor<B, 2>, x1: Tensor<B, 2>, layout: &Layout) -> Tensor<B, 1> {
    match geometry {
        Geometry::Euclidean | Geometry::Normalized => (pred - x1).square().mean(),
        Geometry::Geometric => geometric_loss(pred, x1, layout),
    }
}

/// `mean_b [ (1/L) Σ_k mean_s dist(x̂_s, x_s)² + mean_bias (x̂ − x)² ]`.
pub fn geometric_loss<B: Backend>(pred: Tensor<B, 2>, x1: Tensor<B, 2>, layout: &Layout) -> Tensor<B, 1> {
    let [batch, p] = pred.dims();
    let n = layout.sizes();
    let depth = layout.num_layers();
    let mut per_network = Tensor::<B, 1>::zeros([batch], &pred.device());
    for l in 1..=depth {
        let off = layout.weight_offset(l);
        let size = n[l - 1] * n[l];
        let a = pred.clone().slice([0..batch, off..off + size]);
        let b = x1.clone().slice([0..batch, off..off + size]);
        // Hidden layer: one point per output neuron (the column of W_lᵀ); last layer: one
        // point holding the whole block.
        let cosine = if l < depth {
            (a.reshape([batch, n[l - 1], n[l]]) * b.reshape([batch, n[l - 1], n[l]])).sum_dim(1).reshape([batch, n[l]])
        } else {
            (a * b).sum_dim(1)
        };
        let dist = cosine.clamp(-1.0 + EPS, 1.0 - EPS).acos();
        let block = dist.square().mean_dim(1).reshape([batch]);
        per_network = per_network + block / depth as f64;
    }
    let bias_start = layout.num_weights();
    let bias = (pred.slice([0..batch, bias_start..p]) - x1.slice([0..batch, bias_start..p]))
        .square()
        .mean_dim(1)
        .reshape([batch]);
    (per_network + bias).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{product::ProductGeometry, sphere};
    use crate::noise::ResumableRng;
    use burn::backend::{Autodiff, NdArray};

    type B = NdArray<f32>;

    fn tensor<BB: Backend>(v: &[f32], batch: usize) -> Tensor<BB, 2> {
        crate::rows::rows_tensor::<BB>(v, v.len() / batch, &Default::default())
    }

    #[test]
    fn geometric_loss_matches_a_per_point_reference() {
        let layout = Layout(vec![4, 3, 2]);
        let product = ProductGeometry::new(&layout);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(13);
        let mut a = rng.normal_vec(2 * p, 0.0, 1.0);
        let mut b = rng.normal_vec(2 * p, 0.0, 1.0);
        product.project(&mut a);
        product.project(&mut b);
        let got = geometric_loss(tensor::<B>(&a, 2), tensor::<B>(&b, 2), &layout).into_scalar();
        let mut expected = 0.0f64;
        for r in 0..2 {
            let (ra, rb) = (&a[r * p..(r + 1) * p], &b[r * p..(r + 1) * p]);
            let mut blocks = vec![(0.0f64, 0usize); 2];
            for pt in product.points() {
                let xa: Vec<f32> = pt.indices().map(|i| ra[i]).collect();
                let xb: Vec<f32> = pt.indices().map(|i| rb[i]).collect();
                let d = sphere::dist(&xa, &xb) as f64;
                blocks[pt.block].0 += d * d;
                blocks[pt.block].1 += 1;
            }
            let sphere_part: f64 = blocks.iter().map(|(s, c)| s / *c as f64).sum::<f64>() / 2.0;
            let bias: f64 = product.bias_range().map(|i| ((ra[i] - rb[i]) as f64).powi(2)).sum::<f64>()
                / product.bias_range().len() as f64;
            expected += (sphere_part + bias) / 2.0;
        }
        assert!((got as f64 - expected).abs() < 1e-4, "{got} vs {expected}");
    }

    #[test]
    fn geometric_loss_has_a_floor_and_a_dead_gradient_at_the_target() {
        type A = Autodiff<NdArray<f32>>;
        let layout = Layout(vec![4, 3, 2]);
        let product = ProductGeometry::new(&layout);
        let mut x = ResumableRng::seed_from(14).normal_vec(layout.num_params(), 0.0, 1.0);
        product.project(&mut x);
        let pred = tensor::<A>(&x, 1).require_grad();
        let loss = geometric_loss(pred.clone(), tensor::<A>(&x, 1), &layout);
        let value = loss.clone().into_scalar();
        let floor = (1.0f32 - 1e-4).acos().powi(2);
        assert!((value - floor).abs() < 1e-6, "loss {value}, floor² {floor}");
        let grads = loss.backward();
        let g = pred.grad(&grads).expect("gradient").into_data().to_vec::<f32>().expect("f32");
        assert!(g.iter().all(|v| *v == 0.0), "gradient within the clamp must vanish");
    }

    #[test]
    fn mse_is_a_plain_mean() {
        let a = tensor::<B>(&[1.0, 2.0, 3.0, 4.0], 2);
        let b = tensor::<B>(&[0.0, 2.0, 3.0, 2.0], 2);
        let l = flow_loss(Geometry::Euclidean, a, b, &Layout(vec![1, 1])).into_scalar();
        assert!((l - 5.0 / 4.0).abs() < 1e-6);
    }
}
