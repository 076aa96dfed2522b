//! Cross-entropy loss and its gradient for a batch, by hand-written backpropagation on the
//! flat layout. This is the default CPU training path: on MLPs this small, a framework's
//! per-op overhead dominates, while here a step is a few sgemm calls on reused buffers.

use super::model::{affine, gemm, relu_in_place};
use crate::layout::Layout;

/// Reusable buffers for one network's forward and backward passes.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    /// `acts[l]` = `h_l` `[B, n_l]` for l = 1..=L (logits last).
    acts: Vec<Vec<f32>>,
    /// `∂loss/∂z_l` for the layer being processed and the one below it.
    delta: Vec<f32>,
    delta_below: Vec<f32>,
}

/// Loss and accuracy counts of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStats {
    /// Mean cross-entropy over the batch.
    pub loss: f64,
    /// Number of rows whose argmax logit is the label.
    pub correct: usize,
}

impl Workspace {
    fn prepare(&mut self, layout: &Layout, batch: usize) {
        let sizes = layout.sizes();
        self.acts.resize_with(sizes.len(), Vec::new);
        for (l, act) in self.acts.iter_mut().enumerate().skip(1) {
            act.resize(batch * sizes[l], 0.0);
        }
        let widest = sizes[1..].iter().copied().max().unwrap_or(0);
        self.delta.resize(batch * widest, 0.0);
        self.delta_below.resize(batch * widest, 0.0);
    }

    fn forward(&mut self, layout: &Layout, theta: &[f32], x: &[f32], batch: usize) {
        let big_l = layout.num_layers();
        for l in 1..=big_l {
            let (below, rest) = self.acts.split_at_mut(l);
            let h: &[f32] = if l == 1 { x } else { &below[l - 1] };
            affine(layout, theta, l, h, batch, &mut rest[0]);
            if l < big_l {
                relu_in_place(&mut rest[0]);
            }
        }
    }
}

/// Row-wise softmax cross-entropy of `logits` `[batch, classes]`; writes
/// `∂(mean CE)/∂logits` into `delta` when given.
fn softmax_cross_entropy(logits: &[f32], labels: &[u32], classes: usize, mut delta: Option<&mut [f32]>) -> BatchStats {
    let batch = labels.len();
    let mut loss = 0.0f64;
    let mut correct = 0;
    for (i, (row, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        let label = label as usize;
        let (argmax, max) = row
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (j, v)| if v > best.1 { (j, v) } else { best });
        if argmax == label {
            correct += 1;
        }
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let log_sum = sum.ln();
        loss += (log_sum - (row[label] - max)) as f64;
        if let Some(delta) = delta.as_deref_mut() {
            let d = &mut delta[i * classes..(i + 1) * classes];
            let scale = 1.0 / batch as f32;
            for (dj, &v) in d.iter_mut().zip(row) {
                *dj = (v - max - log_sum).exp() * scale;
            }
            d[label] -= scale;
        }
    }
    BatchStats { loss: loss / batch as f64, correct }
}

/// Mean cross-entropy of θ on a batch and its gradient, written into `grad` (flat layout).
pub fn loss_and_grad(
    layout: &Layout,
    theta: &[f32],
    x: &[f32],
    labels: &[u32],
    ws: &mut Workspace,
    grad: &mut [f32],
) -> BatchStats {
    let batch = labels.len();
    let sizes = layout.sizes();
    let big_l = layout.num_layers();
    assert_eq!(grad.len(), theta.len(), "gradient buffer does not match θ");
    ws.prepare(layout, batch);
    ws.forward(layout, theta, x, batch);
    let classes = sizes[big_l];
    let stats = softmax_cross_entropy(&ws.acts[big_l], labels, classes, Some(&mut ws.delta[..batch * classes]));

    for l in (1..=big_l).rev() {
        let (n_in, n_out) = (sizes[l - 1], sizes[l]);
        let delta = &ws.delta[..batch * n_out];
        let h_below: &[f32] = if l == 1 { x } else { &ws.acts[l - 1] };
        // ∂W_lᵀ [n_in, n_out] = h_{l-1}ᵀ · δ_l
        let w_off = layout.weight_offset(l);
        gemm(n_in, batch, n_out, h_below, (1, n_in), delta, (n_out, 1), 0.0, &mut grad[w_off..w_off + n_in * n_out]);
        // ∂b_l = Σ_rows δ_l
        let db = layout.bias_mut(grad, l);
        db.fill(0.0);
        for row in delta.chunks_exact(n_out) {
            for (g, &d) in db.iter_mut().zip(row) {
                *g += d;
            }
        }
        if l > 1 {
            // δ_{l-1} = (δ_l · W_l) ⊙ 1[h_{l-1} > 0]; W_l is W_lᵀ read with swapped strides.
            let w = &theta[w_off..w_off + n_in * n_out];
            let below = &mut ws.delta_below[..batch * n_in];
            gemm(batch, n_out, n_in, delta, (n_out, 1), w, (1, n_out), 0.0, below);
            for (d, &h) in below.iter_mut().zip(h_below) {
                if h <= 0.0 {
                    *d = 0.0;
                }
            }
            std::mem::swap(&mut ws.delta, &mut ws.delta_below);
        }
    }
    stats
}

/// Loss and correct count of θ on a batch, forward only.
pub fn batch_loss(layout: &Layout, theta: &[f32], x: &[f32], labels: &[u32], ws: &mut Workspace) -> BatchStats {
    let batch = labels.len();
    ws.prepare(layout, batch);
    ws.forward(layout, theta, x, batch);
    let big_l = layout.num_layers();
    softmax_cross_entropy(&ws.acts[big_l], labels, layout.sizes()[big_l], None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    /// Central finite differences in f64 of the f32 loss, on a few coordinates.
    #[test]
    fn gradient_matches_finite_differences() {
        let layout = Layout(vec![4, 5, 3, 3]);
        let mut rng = rng::stream(11, "test", 0);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut rng, &mut theta, 0.0, 0.6);
        let mut x = vec![0.0; 7 * 4];
        rng::fill_normal(&mut rng, &mut x, 0.0, 1.0);
        let labels = [0, 1, 2, 2, 1, 0, 1];
        let mut ws = Workspace::default();
        let mut grad = vec![0.0; theta.len()];
        loss_and_grad(&layout, &theta, &x, &labels, &mut ws, &mut grad);
        let eps = 1e-2f32;
        for i in (0..theta.len()).step_by(3) {
            let mut plus = theta.clone();
            plus[i] += eps;
            let mut minus = theta.clone();
            minus[i] -= eps;
            let fd = (batch_loss(&layout, &plus, &x, &labels, &mut ws).loss
                - batch_loss(&layout, &minus, &x, &labels, &mut ws).loss)
                / (2.0 * eps as f64);
            assert!((fd - grad[i] as f64).abs() < 2e-3, "param {i}: finite difference {fd} vs backprop {}", grad[i]);
        }
    }
}
