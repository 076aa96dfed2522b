//! `canon(θ)` of docs/science.md 4.1 (Pittorino et al.): removal of the ReLU scaling
//! symmetry, in two forms over one algorithm and one norm floor. [`canonicalize_row`]
//! rescales one flat network in place with last-layer radius ρ (the `canonicalize` stage);
//! [`canonicalize`] is the differentiable batched form (ρ = 1) used on predictions inside
//! the training graph and on prior draws (§5.6).
//!
//! Layers are processed in order, each on the already-rescaled matrices:
//! 1. every hidden neuron `b` of layer `l`: `r = ‖W_l[b,:]‖₂` (incoming weights only),
//!    `W_l[b,:] /= r`, `b_l[b] /= r`, `W_{l+1}[:,b] *= r`;
//! 2. last layer: `s = ‖W_L‖_F`, `W_L *= ρ/s`, `b_L *= ρ/s`.
//!
//! Hidden functions are preserved exactly; logits are scaled by `ρ/s > 0`. Norms are clamped
//! at [`NORM_FLOOR`] so a collapsed neuron or prediction cannot produce NaN (docs/science.md
//! §10.2 item 6, recommended); the batched form clamps the squared norm at its square, the
//! same floor with a finite gradient at 0.

use burn::tensor::{backend::Backend, Tensor};

use crate::layout::Layout;

/// Smallest norm a neuron or the last layer may be divided by.
pub const NORM_FLOOR: f64 = 1e-12;
const NORM_FLOOR_F32: f32 = NORM_FLOOR as f32;
const FLOOR_SQUARED: f64 = NORM_FLOOR * NORM_FLOOR;

/// Canonicalize one flat network in place with last-layer radius `rho`.
pub fn canonicalize_row(layout: &Layout, theta: &mut [f32], rho: f32) {
    assert_eq!(theta.len(), layout.num_params(), "θ does not match layout {layout}");
    let sizes = layout.sizes().to_vec();
    let big_l = layout.num_layers();
    for l in 1..big_l {
        let (n_in, n_out, n_next) = (sizes[l - 1], sizes[l], sizes[l + 1]);
        let w_off = layout.weight_offset(l);
        let next_off = layout.weight_offset(l + 1);
        for b in 0..n_out {
            // Neuron b's incoming weights are the strided column b of the [n_in, n_out] block.
            let norm_sq: f32 = (0..n_in).map(|a| theta[w_off + a * n_out + b].powi(2)).sum();
            let r = norm_sq.sqrt().max(NORM_FLOOR_F32);
            for a in 0..n_in {
                theta[w_off + a * n_out + b] /= r;
            }
            theta[layout.bias_index(l, b)] /= r;
            // Its outgoing weights are row b of the next [n_out, n_next] block.
            for o in 0..n_next {
                theta[next_off + b * n_next + o] *= r;
            }
        }
    }
    let w_off = layout.weight_offset(big_l);
    let last = &mut theta[w_off..w_off + sizes[big_l - 1] * sizes[big_l]];
    let s = last.iter().map(|v| v * v).sum::<f32>().sqrt().max(NORM_FLOOR_F32);
    let scale = rho / s;
    for v in last.iter_mut() {
        *v *= scale;
    }
    for v in layout.bias_mut(theta, big_l) {
        *v *= scale;
    }
}

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

#[cfg(test)]
mod row_tests {
    use super::*;
    use crate::mlp::{forward_layers, MlpConfig};
    use crate::rng;

    fn network(layout: &Layout, seed: u64) -> Vec<f32> {
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut rng::stream(seed, "test", 0), &mut theta, 0.0, 0.3);
        theta
    }

    fn inputs(layout: &Layout, batch: usize) -> Vec<f32> {
        let mut x = vec![0.0; batch * layout.inputs()];
        rng::fill_normal(&mut rng::stream(9, "inputs", 0), &mut x, 0.0, 1.0);
        x
    }

    #[test]
    fn preserves_hidden_functions_and_scales_logits_positively() {
        let layout = Layout(vec![30, 16, 16, 2]);
        let theta = network(&layout, 1);
        let mut canon = theta.clone();
        canonicalize_row(&layout, &mut canon, 1.0);
        let x = inputs(&layout, 20);
        let before = forward_layers(&layout, &theta, &x, 20);
        let after = forward_layers(&layout, &canon, &x, 20);
        // Hidden neurons are scaled by 1/r per neuron but their on/off pattern and the
        // network function up to the logits scale are preserved: compare the logits ratio.
        let ratios: Vec<f32> = before[3].iter().zip(&after[3]).map(|(a, b)| b / a).collect();
        let c = ratios[0];
        assert!(c > 0.0);
        for (i, r) in ratios.iter().enumerate() {
            assert!((r - c).abs() < 1e-4 * c.abs().max(1.0), "logit {i}: ratio {r} vs {c}");
        }
        // Each hidden neuron's activation is divided by its own positive constant (its
        // incoming norm), the same for every input: the hidden functions are preserved up
        // to that per-neuron scale, and the same neurons fire.
        for l in 1..3 {
            let width = layout.sizes()[l];
            for b in 0..width {
                let mut scale = None;
                for i in 0..20 {
                    let (a, c) = (before[l][i * width + b], after[l][i * width + b]);
                    assert_eq!(a > 0.0, c > 0.0, "layer {l} neuron {b} input {i}");
                    if a > 1e-3 {
                        let k = *scale.get_or_insert(c / a);
                        assert!((c / a - k).abs() < 1e-4 * k, "layer {l} neuron {b}: scale {} vs {k}", c / a);
                    }
                }
            }
        }
    }

    #[test]
    fn hidden_rows_have_unit_norm_and_last_layer_has_radius_rho() {
        let layout = Layout(vec![30, 16, 16, 2]);
        for rho in [1.0f32, 2.0f32.sqrt()] {
            let mut theta = network(&layout, 2);
            canonicalize_row(&layout, &mut theta, rho);
            for l in 1..3 {
                let w = layout.weight_matrix(&theta, l);
                for row in w.chunks_exact(layout.sizes()[l - 1]) {
                    let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    assert!((n - 1.0).abs() < 1e-5, "layer {l} row norm {n}");
                }
            }
            let last = layout.weight_matrix(&theta, 3);
            let s: f32 = last.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((s - rho).abs() < 1e-5, "‖W_L‖ = {s}, ρ = {rho}");
        }
    }

    #[test]
    fn is_idempotent() {
        let layout = Layout(vec![784, 10, 10]);
        let mut once = network(&layout, 3);
        canonicalize_row(&layout, &mut once, 1.0);
        let mut twice = once.clone();
        canonicalize_row(&layout, &mut twice, 1.0);
        for (a, b) in once.iter().zip(&twice) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn prior_draws_give_uniform_first_layer_directions() {
        // Directions of i.i.d. Gaussian vectors are uniform on the sphere: the mean direction
        // is ~0 and each coordinate has second moment 1/n_0.
        let layout = Layout(vec![30, 16, 16, 2]);
        let config = MlpConfig::new(layout.clone());
        let mut sum = vec![0.0f64; 30];
        let mut second = 0.0f64;
        let mut count = 0usize;
        for i in 0..400 {
            let mut theta = config.init(&mut rng::stream(4, "prior", i));
            canonicalize_row(&layout, &mut theta, 1.0);
            let w = layout.weight_matrix(&theta, 1);
            for row in w.chunks_exact(30) {
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += v as f64;
                }
                second += (row[0] as f64).powi(2);
                count += 1;
            }
        }
        let max_mean = sum.iter().map(|s| (s / count as f64).abs()).fold(0.0, f64::max);
        assert!(max_mean < 0.02, "mean direction coordinate {max_mean}");
        let m2 = second / count as f64;
        assert!((m2 - 1.0 / 30.0).abs() < 0.004, "E[u_0²] = {m2}, expected 1/30");
    }

    #[test]
    fn zero_neuron_stays_finite() {
        let layout = Layout(vec![3, 2, 2]);
        let mut theta = network(&layout, 5);
        for a in 0..3 {
            theta[layout.weight_index(1, 0, a)] = 0.0;
        }
        canonicalize_row(&layout, &mut theta, 1.0);
        assert!(theta.iter().all(|v| v.is_finite()));
    }
}
