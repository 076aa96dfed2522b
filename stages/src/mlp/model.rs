//! The base MLP (docs/science.md 1.1-1.2) as a flat parameter vector, and its fast CPU forward.
//!
//! The flat layout stores `W_lᵀ` row-major as `[n_{l-1}, n_l]`, which is exactly the right
//! operand of `Z_l = H_{l-1} · W_lᵀ + b_l` for a row-major batch `H_{l-1}` `[B, n_{l-1}]`,
//! so the forward and backward passes run on slices of θ without any copy.

use crate::layout::Layout;
use crate::rng::{self, Rng};

/// Standard deviation of the base-model weight init, N(0, 0.1²) [faithful].
pub const INIT_STD: f32 = 0.1;

/// A ReLU MLP of a given layout.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    pub layout: Layout,
}

impl MlpConfig {
    pub fn new(layout: Layout) -> Self {
        MlpConfig { layout }
    }

    /// The base-training init: every weight from N(0, 0.1²), every bias 0 (docs/science.md 1.2).
    pub fn init(&self, rng: &mut Rng) -> Vec<f32> {
        let mut theta = vec![0.0; self.layout.num_params()];
        let weights = self.layout.num_weights();
        rng::fill_normal(rng, &mut theta[..weights], 0.0, INIT_STD);
        theta
    }
}

/// `C = beta·C + A·B` for row-major slices with arbitrary strides (matrixmultiply sgemm).
///
/// `A` is `m × k` with strides `(rsa, csa)`, `B` is `k × n` with `(rsb, csb)`, `C` is
/// `m × n` row-major and contiguous.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    // The last element each operand touches must be in bounds: this is what makes the
    // unsafe call sound.
    if k > 0 {
        assert!((m - 1) * rsa + (k - 1) * csa < a.len(), "gemm: A out of bounds");
        assert!((k - 1) * rsb + (n - 1) * csb < b.len(), "gemm: B out of bounds");
    }
    assert!(m * n <= c.len(), "gemm: C out of bounds");
    // SAFETY: bounds checked above; the three slices are distinct borrows (C is &mut).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// One layer's affine map on a batch: `out[B, n_l] = h[B, n_{l-1}] · W_lᵀ + b_l`.
pub(crate) fn affine(layout: &Layout, theta: &[f32], l: usize, h: &[f32], batch: usize, out: &mut [f32]) {
    let (n_in, n_out) = (layout.sizes()[l - 1], layout.sizes()[l]);
    let bias = layout.bias(theta, l);
    for row in out[..batch * n_out].chunks_exact_mut(n_out) {
        row.copy_from_slice(bias);
    }
    let w = &theta[layout.weight_offset(l)..layout.weight_offset(l) + n_in * n_out];
    gemm(batch, n_in, n_out, h, (n_in, 1), w, (n_out, 1), 1.0, out);
}

pub(crate) fn relu_in_place(v: &mut [f32]) {
    for x in v {
        *x = x.max(0.0);
    }
}

/// The activations of every layer for a batch `x` `[batch, n_0]`: entry `l` (1..=L) is
/// `h_l` `[batch, n_l]` (after ReLU for hidden layers; the logits for `l = L`). Entry 0 is
/// empty (the input is not copied).
pub fn forward_layers(layout: &Layout, theta: &[f32], x: &[f32], batch: usize) -> Vec<Vec<f32>> {
    assert_eq!(theta.len(), layout.num_params(), "θ does not match layout {layout}");
    assert_eq!(x.len(), batch * layout.inputs(), "input batch does not match layout {layout}");
    let big_l = layout.num_layers();
    let mut acts: Vec<Vec<f32>> = vec![Vec::new()];
    for l in 1..=big_l {
        let mut out = vec![0.0; batch * layout.sizes()[l]];
        let h: &[f32] = if l == 1 { x } else { &acts[l - 1] };
        affine(layout, theta, l, h, batch, &mut out);
        if l < big_l {
            relu_in_place(&mut out);
        }
        acts.push(out);
    }
    acts
}

/// Logits `[batch, n_L]` of the MLP θ on a batch `x` `[batch, n_0]`.
pub fn forward(layout: &Layout, theta: &[f32], x: &[f32], batch: usize) -> Vec<f32> {
    forward_layers(layout, theta, x, batch).pop().expect("a layout has at least one weight layer")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain loops in torch orientation, the definition the fast path must match.
    fn naive_forward(layout: &Layout, theta: &[f32], x: &[f32]) -> Vec<f32> {
        let mut h = x.to_vec();
        for l in 1..=layout.num_layers() {
            let w = layout.weight_matrix(theta, l);
            let b = layout.bias(theta, l);
            let (n_in, n_out) = (layout.sizes()[l - 1], layout.sizes()[l]);
            let mut z: Vec<f32> = (0..n_out).map(|o| b[o] + (0..n_in).map(|a| w[o * n_in + a] * h[a]).sum::<f32>()).collect();
            if l < layout.num_layers() {
                relu_in_place(&mut z);
            }
            h = z;
        }
        h
    }

    #[test]
    fn fast_forward_matches_the_torch_orientation_definition() {
        let layout = Layout(vec![5, 4, 3, 2]);
        let mut rng = rng::stream(3, "test", 0);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut rng, &mut theta, 0.0, 0.5);
        let mut x = vec![0.0; 6 * 5];
        rng::fill_normal(&mut rng, &mut x, 0.0, 1.0);
        let fast = forward(&layout, &theta, &x, 6);
        for i in 0..6 {
            let slow = naive_forward(&layout, &theta, &x[i * 5..(i + 1) * 5]);
            for o in 0..2 {
                assert!((fast[i * 2 + o] - slow[o]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn init_has_zero_biases_and_std_point_one_weights() {
        let layout = Layout(vec![784, 10, 10]);
        let theta = MlpConfig::new(layout.clone()).init(&mut rng::stream(0, "init", 0));
        assert!(theta[layout.num_weights()..].iter().all(|&b| b == 0.0));
        let w = &theta[..layout.num_weights()];
        let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var.sqrt() - 0.1).abs() < 0.003, "std {}", var.sqrt());
    }
}
