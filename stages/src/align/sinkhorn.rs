//! Sinkhorn re-basin (docs/science.md 3.1, 3.3): what the thesis code implements.
//!
//! One free matrix `Q_l` per hidden layer, initialized `I + 0.1·G`; the soft permutation
//! `S_l` is 20 log-domain Sinkhorn iterations (columns then rows) of `Q_l/τ`; the soft-
//! permuted network is `W'_l = S_l W_l S_{l-1}ᵀ`, `b'_l = S_l b_l`. `Q` is trained with
//! Adam(0.1) (PyTorch semantics) on one of three objectives, gradients by burn autodiff
//! through the unrolled iterations. The hard permutation maximizes `Σ_r Q_l[r, σ(r)]`.
//!
//! Networks are processed as a batch (`[N, ·, ·]` tensors): each network's loss depends
//! only on its own `Q`, so summing the losses gives every network its own gradient.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::Rng as _;

use super::Permutations;
use crate::assignment;
use crate::data::Split;
use crate::layout::Layout;
use crate::mlp::OptimizerConfig;
use crate::rng::{self, Rng};

/// The alignment objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// `(1/P)‖θ_ref − π_S(θ)‖²` (the code's default).
    L2,
    /// Cross-entropy at the midpoint `½(π_S(θ) + θ_ref)` (thesis Eq. 4.5).
    Mid,
    /// Cross-entropy at `(1−λ)θ_ref + λπ_S(θ)`, λ ~ U(0,1) redrawn every step (Eq. 4.6).
    Rnd,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornConfig {
    pub objective: Objective,
    /// Adam iterations (the code uses 5, 10 or 1000; 1000 recommended).
    pub iterations: usize,
    pub lr: f64,
    pub sinkhorn_iterations: usize,
    pub tau: f32,
    /// Data objectives: minibatches per iteration, one Adam step each (`n_est_batch`).
    pub batches_per_iteration: usize,
    pub batch_size: usize,
}

impl Default for SinkhornConfig {
    fn default() -> Self {
        SinkhornConfig {
            objective: Objective::L2,
            iterations: 1000,
            lr: 0.1,
            sinkhorn_iterations: 20,
            tau: 1.0,
            batches_per_iteration: 25,
            batch_size: 64,
        }
    }
}

/// A network's weights as batched tensors in torch orientation.
struct Batched<B: AutodiffBackend> {
    /// `[N, n_l, n_{l-1}]` per layer.
    weights: Vec<Tensor<B, 3>>,
    /// `[N, n_l, 1]` per layer.
    biases: Vec<Tensor<B, 3>>,
}

fn batched<B: AutodiffBackend>(layout: &Layout, thetas: &[&[f32]], device: &B::Device) -> Batched<B> {
    let n = thetas.len();
    let sizes = layout.sizes();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for l in 1..=layout.num_layers() {
        let (n_in, n_out) = (sizes[l - 1], sizes[l]);
        let w: Vec<f32> = thetas.iter().flat_map(|t| layout.weight_matrix(t, l)).collect();
        let b: Vec<f32> = thetas.iter().flat_map(|t| layout.bias(t, l).to_vec()).collect();
        weights.push(Tensor::from_data(TensorData::new(w, [n, n_out, n_in]), device));
        biases.push(Tensor::from_data(TensorData::new(b, [n, n_out, 1]), device));
    }
    Batched { weights, biases }
}

/// Log-domain Sinkhorn with unit marginals: columns, then rows, `iterations` times.
fn sinkhorn<B: AutodiffBackend>(q: Tensor<B, 3>, tau: f32, iterations: usize) -> Tensor<B, 3> {
    let mut a = q.div_scalar(tau);
    for _ in 0..iterations {
        a = a.clone() - logsumexp(a, 1);
        a = a.clone() - logsumexp(a, 2);
    }
    a.exp()
}

/// `log Σ exp` along `dim`, kept as a size-1 dim. The shift is detached: the result does
/// not depend on it, so neither does its gradient.
fn logsumexp<B: AutodiffBackend>(a: Tensor<B, 3>, dim: usize) -> Tensor<B, 3> {
    let m = a.clone().max_dim(dim).detach();
    (a - m.clone()).exp().sum_dim(dim).log() + m
}

/// The soft-permuted network `π_S(θ)`.
fn soft_permute<B: AutodiffBackend>(net: &Batched<B>, s: &[Tensor<B, 3>]) -> Batched<B> {
    let big_l = net.weights.len();
    let mut weights = Vec::with_capacity(big_l);
    let mut biases = Vec::with_capacity(big_l);
    for l in 1..=big_l {
        let mut w = net.weights[l - 1].clone();
        let mut b = net.biases[l - 1].clone();
        if l < big_l {
            w = s[l - 1].clone().matmul(w);
            b = s[l - 1].clone().matmul(b);
        }
        if l > 1 {
            w = w.matmul(s[l - 2].clone().swap_dims(1, 2));
        }
        weights.push(w);
        biases.push(b);
    }
    Batched { weights, biases }
}

/// `(1−λ)·a + λ·b` per network, `lambda` `[N, 1, 1]`.
fn interpolate<B: AutodiffBackend>(a: &Batched<B>, b: &Batched<B>, lambda: Tensor<B, 3>) -> Batched<B> {
    let mix = |x: &Tensor<B, 3>, y: &Tensor<B, 3>| {
        x.clone() * (lambda.clone().neg() + 1.0) + y.clone() * lambda.clone()
    };
    Batched {
        weights: a.weights.iter().zip(&b.weights).map(|(x, y)| mix(x, y)).collect(),
        biases: a.biases.iter().zip(&b.biases).map(|(x, y)| mix(x, y)).collect(),
    }
}

/// Sum over networks of the mean cross-entropy on one batch.
fn cross_entropy_sum<B: AutodiffBackend>(net: &Batched<B>, x: &[f32], labels: &[u32], device: &B::Device) -> Tensor<B, 1> {
    let n = net.weights[0].dims()[0];
    let (batch, features) = (labels.len(), x.len() / labels.len());
    let tiled: Vec<f32> = (0..n).flat_map(|_| x.iter().copied()).collect();
    let mut h = Tensor::<B, 3>::from_data(TensorData::new(tiled, [n, batch, features]), device);
    let big_l = net.weights.len();
    for l in 0..big_l {
        h = h.matmul(net.weights[l].clone().swap_dims(1, 2)) + net.biases[l].clone().swap_dims(1, 2);
        if l + 1 < big_l {
            h = burn::tensor::activation::relu(h);
        }
    }
    let classes = h.dims()[2];
    let ids: Vec<i64> = (0..n).flat_map(|_| labels.iter().map(|&c| c as i64)).collect();
    let ids = Tensor::<B, 3, Int>::from_data(TensorData::new(ids, [n, batch, 1]), device);
    let log_p = burn::tensor::activation::log_softmax(h, 2);
    debug_assert!(classes > 0);
    log_p.gather(2, ids).sum().neg().div_scalar(batch as f32)
}

fn l2_sum<B: AutodiffBackend>(a: &Batched<B>, b: &Batched<B>, params: usize) -> Tensor<B, 1> {
    let mut total: Option<Tensor<B, 1>> = None;
    for (x, y) in a.weights.iter().zip(&b.weights).chain(a.biases.iter().zip(&b.biases)) {
        let d = (x.clone() - y.clone()).powf_scalar(2.0).sum();
        total = Some(match total {
            Some(t) => t + d,
            None => d,
        });
    }
    total.expect("a network has at least one layer").div_scalar(params as f32)
}

fn tensor_values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("converted tensor data is f32")
}

/// Align a batch of networks to `reference`; returns one set of hard permutations each.
/// `data` is required for the data objectives.
pub fn sinkhorn_rebasin<B: AutodiffBackend>(
    layout: &Layout,
    reference: &[f32],
    thetas: &[&[f32]],
    config: &SinkhornConfig,
    data: Option<&Split>,
    rng: &mut Rng,
    device: &B::Device,
) -> Vec<Permutations> {
    let n = thetas.len();
    if n == 0 {
        return Vec::new();
    }
    let hidden: Vec<usize> = layout.sizes()[1..layout.num_layers()].to_vec();
    // Q_l = I + 0.1·G, all hidden layers concatenated for the optimizer.
    let mut q: Vec<f32> = Vec::new();
    for &h in &hidden {
        for _ in 0..n {
            let mut g = vec![0.0; h * h];
            rng::fill_normal(rng, &mut g, 0.0, 0.1);
            for i in 0..h {
                g[i * h + i] += 1.0;
            }
            q.extend(g);
        }
    }
    let mut adam = OptimizerConfig::adam(config.lr).build(q.len());
    let net = batched::<B>(layout, thetas, device);
    let reference_rows: Vec<&[f32]> = vec![reference; n];
    let reference_net = batched::<B>(layout, &reference_rows, device);
    let params = layout.num_params();

    let mut step = |q: &mut Vec<f32>, batch: Option<(&[f32], &[u32])>, rng: &mut Rng| {
        let mut offset = 0;
        let q_tensors: Vec<Tensor<B, 3>> = hidden
            .iter()
            .map(|&h| {
                let len = n * h * h;
                let t = Tensor::<B, 3>::from_data(TensorData::new(q[offset..offset + len].to_vec(), [n, h, h]), device)
                    .require_grad();
                offset += len;
                t
            })
            .collect();
        let s: Vec<Tensor<B, 3>> =
            q_tensors.iter().map(|t| sinkhorn(t.clone(), config.tau, config.sinkhorn_iterations)).collect();
        let permuted = soft_permute(&net, &s);
        let loss = match (config.objective, batch) {
            (Objective::L2, _) => l2_sum(&reference_net, &permuted, params),
            (Objective::Mid, Some((x, y))) => {
                let half = Tensor::<B, 3>::from_data(TensorData::new(vec![0.5f32; n], [n, 1, 1]), device);
                cross_entropy_sum(&interpolate(&reference_net, &permuted, half), x, y, device)
            }
            (Objective::Rnd, Some((x, y))) => {
                let lambdas: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
                let lambda = Tensor::<B, 3>::from_data(TensorData::new(lambdas, [n, 1, 1]), device);
                cross_entropy_sum(&interpolate(&reference_net, &permuted, lambda), x, y, device)
            }
            (_, None) => unreachable!("data objectives always get a batch"),
        };
        let grads = loss.backward();
        let grad: Vec<f32> = q_tensors
            .iter()
            .flat_map(|t| tensor_values(t.grad(&grads).expect("Q takes part in the loss")))
            .collect();
        adam.step(q, &grad);
    };

    match (config.objective, data) {
        (Objective::L2, _) => {
            for _ in 0..config.iterations {
                step(&mut q, None, rng);
            }
        }
        (_, Some(split)) => {
            let mut order: Vec<usize> = (0..split.len()).collect();
            for _ in 0..config.iterations {
                order.shuffle(rng);
                for rows in order.chunks(config.batch_size).take(config.batches_per_iteration) {
                    let batch = split.gather(rows);
                    step(&mut q, Some((&batch.x, &batch.y)), rng);
                }
            }
        }
        (_, None) => panic!("the data objectives of Sinkhorn re-basin need a data split"),
    }

    // Hard permutations from the raw Q.
    let mut perms = vec![Permutations { sigma: Vec::with_capacity(hidden.len()) }; n];
    let mut offset = 0;
    for &h in &hidden {
        for p in perms.iter_mut() {
            let block: Vec<f64> = q[offset..offset + h * h].iter().map(|&v| v as f64).collect();
            p.sigma.push(assignment::solve_max(&block, h));
            offset += h * h;
        }
    }
    perms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::l2_distance_sq;
    use burn::backend::{Autodiff, NdArray};

    type Ad = Autodiff<NdArray<f32>>;

    #[test]
    fn l2_rebasin_recovers_a_scrambled_copy() {
        let layout = Layout(vec![5, 4, 4, 2]);
        let mut r = rng::stream(31, "test", 0);
        let mut reference = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut r, &mut reference, 0.0, 1.0);
        let mut scramble = Permutations::identity(&layout);
        for s in &mut scramble.sigma {
            s.shuffle(&mut r);
        }
        let copy = scramble.apply(&layout, &reference);
        let mut other = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut r, &mut other, 0.0, 1.0);
        let config = SinkhornConfig { iterations: 200, ..SinkhornConfig::default() };
        let perms = sinkhorn_rebasin::<Ad>(&layout, &reference, &[&copy, &other], &config, None, &mut r, &Default::default());
        assert_eq!(perms.len(), 2);
        assert!(l2_distance_sq(&reference, &perms[0].apply(&layout, &copy)) < 1e-10);
        // Every hard result is a permutation of each hidden layer.
        for s in &perms[1].sigma {
            let mut sorted = s.clone();
            sorted.sort();
            assert_eq!(sorted, (0..s.len()).collect::<Vec<_>>());
        }
    }

    /// Midpoint loss of `aligned` and the reference (absolute barrier numerator).
    fn mid_loss(layout: &Layout, reference: &[f32], aligned: &[f32], split: &Split) -> f64 {
        let mid: Vec<f32> = reference.iter().zip(aligned).map(|(a, b)| 0.5 * (a + b)).collect();
        crate::mlp::evaluate(layout, &mid, split, 64, &mut crate::mlp::grad::Workspace::default()).loss
    }

    #[test]
    fn data_objectives_lower_the_midpoint_loss_of_a_scrambled_copy() {
        let layout = Layout(vec![3, 6, 2]);
        let mut r = rng::stream(32, "test", 0);
        let mut reference = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut r, &mut reference, 0.0, 1.0);
        let scramble = Permutations { sigma: vec![vec![2, 0, 5, 1, 3, 4]] };
        let copy = scramble.apply(&layout, &reference);
        let mut x = vec![0.0; 64 * 3];
        rng::fill_normal(&mut r, &mut x, 0.0, 1.0);
        // Labels are the reference's own predictions, so the reference fits the data.
        let logits = crate::mlp::forward(&layout, &reference, &x, 64);
        let y: Vec<u32> = logits.chunks_exact(2).map(|z| u32::from(z[1] > z[0])).collect();
        let split = Split { features: 3, x, y };
        let unaligned = mid_loss(&layout, &reference, &copy, &split);
        for objective in [Objective::Mid, Objective::Rnd] {
            let config = SinkhornConfig { objective, iterations: 50, batches_per_iteration: 2, batch_size: 32, ..SinkhornConfig::default() };
            let perms = sinkhorn_rebasin::<Ad>(&layout, &reference, &[&copy], &config, Some(&split), &mut r, &Default::default());
            let aligned = mid_loss(&layout, &reference, &perms[0].apply(&layout, &copy), &split);
            assert!(aligned < unaligned, "{objective:?}: midpoint loss {unaligned} -> {aligned}");
        }
    }
}
