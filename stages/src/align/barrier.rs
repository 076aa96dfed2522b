//! The loss-barrier metric of docs/science.md 3.4 (`get_pairwise_mid_loss`): for networks `a`
//! and `b`, the loss at the Euclidean midpoint `mid(a,b) = L((θ_a+θ_b)/2)` (absolute, the
//! code's default) and the barrier `mid(a,b) − (L(θ_a)+L(θ_b))/2` (relative). `L` is the
//! cross-entropy with per-batch averaging (1.3).

use rayon::prelude::*;

use crate::data::Split;
use crate::layout::Layout;
use crate::mlp::{evaluate, grad::Workspace};
use crate::stats::MeanStd;

/// Symmetric matrices of midpoint losses over a set of networks.
#[derive(Clone, Debug, PartialEq)]
pub struct BarrierMatrix {
    pub size: usize,
    /// `L(θ_a)` per network.
    pub endpoint_loss: Vec<f64>,
    /// Accuracy of each network.
    pub endpoint_accuracy: Vec<f64>,
    /// `mid(a, b)`, row-major `[size × size]`; the diagonal is `L(θ_a)`.
    pub mid_loss: Vec<f64>,
}

impl BarrierMatrix {
    pub fn absolute(&self, a: usize, b: usize) -> f64 {
        self.mid_loss[a * self.size + b]
    }

    pub fn relative(&self, a: usize, b: usize) -> f64 {
        self.absolute(a, b) - 0.5 * (self.endpoint_loss[a] + self.endpoint_loss[b])
    }

    /// Over the pairs `a < b`.
    fn summarize(&self, value: impl Fn(usize, usize) -> f64) -> MeanStd {
        let pairs = (0..self.size).flat_map(|a| (a + 1..self.size).map(move |b| (a, b)));
        MeanStd::of(pairs.map(|(a, b)| value(a, b))).unwrap_or(MeanStd::EMPTY)
    }

    pub fn absolute_summary(&self) -> MeanStd {
        self.summarize(|a, b| self.absolute(a, b))
    }

    pub fn relative_summary(&self) -> MeanStd {
        self.summarize(|a, b| self.relative(a, b))
    }
}

/// Midpoint losses of every pair of `networks` (flat rows of `layout`) on `split`.
pub fn pairwise_midpoint_losses(layout: &Layout, networks: &[&[f32]], split: &Split, batch_size: usize) -> BarrierMatrix {
    let size = networks.len();
    let endpoints: Vec<(f64, f64)> = networks
        .par_iter()
        .map_init(Workspace::default, |ws, theta| {
            let m = evaluate(layout, theta, split, batch_size, ws);
            (m.loss, m.accuracy)
        })
        .collect();
    let (endpoint_loss, endpoint_accuracy): (Vec<f64>, Vec<f64>) = endpoints.into_iter().unzip();
    let upper: Vec<Vec<f64>> = (0..size)
        .into_par_iter()
        .map_init(
            || (Workspace::default(), vec![0.0f32; layout.num_params()]),
            |(ws, mid), a| {
                (a + 1..size)
                    .map(|b| {
                        for ((m, &x), &y) in mid.iter_mut().zip(networks[a]).zip(networks[b]) {
                            *m = 0.5 * (x + y);
                        }
                        evaluate(layout, mid, split, batch_size, ws).loss
                    })
                    .collect()
            },
        )
        .collect();
    let mut mid_loss = vec![0.0; size * size];
    for a in 0..size {
        mid_loss[a * size + a] = endpoint_loss[a];
        for (k, &v) in upper[a].iter().enumerate() {
            let b = a + 1 + k;
            mid_loss[a * size + b] = v;
            mid_loss[b * size + a] = v;
        }
    }
    BarrierMatrix { size, endpoint_loss, endpoint_accuracy, mid_loss }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    #[test]
    fn identical_networks_have_zero_relative_barrier() {
        let layout = Layout(vec![4, 3, 2]);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut rng::stream(1, "test", 0), &mut theta, 0.0, 1.0);
        let mut other = theta.clone();
        other[0] += 1.0;
        let mut x = vec![0.0; 10 * 4];
        rng::fill_normal(&mut rng::stream(2, "test", 0), &mut x, 0.0, 1.0);
        let split = Split { features: 4, x, y: (0..10).map(|i| i % 2).collect() };
        let m = pairwise_midpoint_losses(&layout, &[&theta, &theta, &other], &split, 4);
        assert!(m.relative(0, 1).abs() < 1e-9);
        assert_eq!(m.absolute(0, 0), m.endpoint_loss[0]);
        assert_eq!(m.absolute(0, 2), m.absolute(2, 0));
        let s = m.absolute_summary();
        assert_eq!(s.count, 3);
    }
}
