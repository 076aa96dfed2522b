//! Task-gradient guidance for sampling (docs/science.md §7.5): `F(x) = −∇_θ L_task(θ = x)` per
//! network, on a fresh random training minibatch for every network and every step.
//!
//! The gradient is laid out in the flat layout by default. `layout_bug` reproduces the
//! code's misplacement: weight gradients flattened in PyTorch parameter order (each `W_l`
//! as `[n_l, n_{l−1}]` row-major) and written over the flat `W_lᵀ` positions.

use rayon::prelude::*;

use crate::data::Split;
use crate::layout::Layout;
use crate::mlp::grad::{loss_and_grad, Workspace};
use crate::noise::ResumableRng;
use crate::sample::Guidance;

pub struct TaskGuidance<'a> {
    layout: Layout,
    train: &'a Split,
    batch: usize,
    layout_bug: bool,
}

/// Why a task cannot guide networks of a layout.
pub fn mismatch(layout: &Layout, inputs: usize, classes: usize) -> Option<String> {
    (layout.inputs() != inputs || layout.outputs() != classes).then(|| {
        format!(
            "the guidance task has {inputs} inputs and {classes} classes but the sampled layout {layout} has {} inputs and {} outputs",
            layout.inputs(),
            layout.outputs()
        )
    })
}

impl<'a> TaskGuidance<'a> {
    pub fn new(layout: Layout, train: &'a Split, batch: usize, layout_bug: bool) -> Self {
        TaskGuidance { layout, train, batch: batch.min(train.len()).max(1), layout_bug }
    }

    /// `batch` distinct row indices (a partial shuffle).
    pub(crate) fn minibatch(&self, rng: &mut ResumableRng) -> Vec<usize> {
        let n = self.train.len();
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..self.batch {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(self.batch);
        idx
    }

    /// Moves weight gradients from flat positions to PyTorch-order positions.
    fn misplace(&self, grad: &[f32]) -> Vec<f32> {
        let n = self.layout.sizes();
        let mut out = grad.to_vec();
        for l in 1..=self.layout.num_layers() {
            let off = self.layout.weight_offset(l);
            for a in 0..n[l - 1] {
                for b in 0..n[l] {
                    out[off + b * n[l - 1] + a] = grad[self.layout.weight_index(l, b, a)];
                }
            }
        }
        out
    }
}

impl Guidance for TaskGuidance<'_> {
    fn field(&mut self, x: &[f32], rng: &mut ResumableRng) -> Vec<f32> {
        let p = self.layout.num_params();
        let batches: Vec<Split> = (0..x.len() / p).map(|_| self.train.gather(&self.minibatch(rng))).collect();
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(p).zip(x.par_chunks(p)).zip(batches.par_iter()).for_each(|((field, theta), data)| {
            let mut ws = Workspace::default();
            let mut grad = vec![0.0f32; p];
            loss_and_grad(&self.layout, theta, &data.x, &data.y, &mut ws, &mut grad);
            if self.layout_bug {
                grad = self.misplace(&grad);
            }
            field.iter_mut().zip(&grad).for_each(|(f, g)| *f = -g);
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guidance_descends_the_task_loss() {
        let layout = Layout(vec![2, 3, 2]);
        let mut rng = ResumableRng::seed_from(1);
        let n = 200;
        let x = rng.normal_vec(2 * n, 0.0, 1.0);
        let y: Vec<u32> = x.chunks(2).map(|r| u32::from(r[0] + r[1] > 0.0)).collect();
        let split = Split { features: 2, x, y };
        let mut guide = TaskGuidance::new(layout.clone(), &split, n, false);
        let mut theta = rng.normal_vec(layout.num_params(), 0.0, 0.5);
        let mut ws = Workspace::default();
        let mut g = vec![0.0; theta.len()];
        let before = loss_and_grad(&layout, &theta, &split.x, &split.y, &mut ws, &mut g).loss;
        for _ in 0..50 {
            let f = guide.field(&theta, &mut rng);
            theta.iter_mut().zip(&f).for_each(|(t, v)| *t += 0.1 * v);
        }
        let after = loss_and_grad(&layout, &theta, &split.x, &split.y, &mut ws, &mut g).loss;
        assert!(after < before, "{after} !< {before}");
        // the bug moves weight entries but keeps biases
        let bugged = TaskGuidance::new(layout.clone(), &split, n, true);
        let grad: Vec<f32> = (0..layout.num_params()).map(|i| i as f32).collect();
        let moved = bugged.misplace(&grad);
        assert_eq!(moved[layout.num_weights()..], grad[layout.num_weights()..]);
        assert_ne!(moved[..layout.num_weights()], grad[..layout.num_weights()]);
    }
}
