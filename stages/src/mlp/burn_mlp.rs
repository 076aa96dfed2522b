//! The base MLP as a burn module, generic over the backend, with conversions to and from
//! the flat layout. The hand-written path in [`super::grad`] is the default CPU trainer;
//! this one exists for other backends and as an independent check of the gradients and
//! optimizer steps (see the tests).
//!
//! burn's `Linear` stores its weight as `[d_input, d_output]` and computes `x·W + b`: that
//! is `W_lᵀ`, exactly the flat layout's block, so conversion is a reshape.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};

use super::optim::{OptimizerConfig, OptimizerKind};
use crate::layout::Layout;

/// A ReLU MLP: `Linear` layers with ReLU between them, none after the last.
#[derive(Module, Debug)]
pub struct BurnMlp<B: Backend> {
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> BurnMlp<B> {
    /// The network θ (flat layout) on `device`.
    pub fn from_flat(layout: &Layout, theta: &[f32], device: &B::Device) -> Self {
        assert_eq!(theta.len(), layout.num_params(), "θ does not match layout {layout}");
        let layers = (1..=layout.num_layers())
            .map(|l| {
                let (n_in, n_out) = (layout.sizes()[l - 1], layout.sizes()[l]);
                let off = layout.weight_offset(l);
                let weight = Tensor::<B, 2>::from_data(TensorData::new(theta[off..off + n_in * n_out].to_vec(), [n_in, n_out]), device);
                let bias = Tensor::<B, 1>::from_data(TensorData::new(layout.bias(theta, l).to_vec(), [n_out]), device);
                Linear { weight: Param::from_tensor(weight), bias: Some(Param::from_tensor(bias)) }
            })
            .collect();
        BurnMlp { layers }
    }

    /// The flat vector θ of this network.
    pub fn to_flat(&self, layout: &Layout) -> Vec<f32> {
        assert_eq!(self.layers.len(), layout.num_layers(), "module depth does not match layout {layout}");
        let mut theta = vec![0.0; layout.num_params()];
        for (i, layer) in self.layers.iter().enumerate() {
            let l = i + 1;
            let off = layout.weight_offset(l);
            let w = tensor_to_vec(layer.weight.val());
            theta[off..off + w.len()].copy_from_slice(&w);
            if let Some(bias) = &layer.bias {
                layout.bias_mut(&mut theta, l).copy_from_slice(&tensor_to_vec(bias.val()));
            }
        }
        theta
    }

    /// Logits `[batch, n_L]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |h, (i, layer)| {
            let z = layer.forward(h);
            if i < last {
                burn::tensor::activation::relu(z)
            } else {
                z
            }
        })
    }
}

fn tensor_to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("converted tensor data is f32")
}

/// Mean cross-entropy of `logits` `[batch, classes]` against class ids.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let batch = labels.dims()[0];
    let picked = log_softmax(logits, 1).gather(1, labels.reshape([batch, 1]));
    picked.mean().neg()
}

/// A batch as burn tensors.
pub fn batch_tensors<B: Backend>(x: &[f32], labels: &[u32], device: &B::Device) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let batch = labels.len();
    let features = x.len() / batch.max(1);
    let x = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [batch, features]), device);
    let y = Tensor::<B, 1, Int>::from_data(
        TensorData::new(labels.iter().map(|&c| c as i64).collect::<Vec<_>>(), [batch]),
        device,
    );
    (x, y)
}

/// Mean cross-entropy of θ on a batch and its gradient in the flat layout, by burn autodiff.
pub fn loss_and_grad<B: AutodiffBackend>(layout: &Layout, theta: &[f32], x: &[f32], labels: &[u32], device: &B::Device) -> (f32, Vec<f32>) {
    let model = BurnMlp::<B>::from_flat(layout, theta, device);
    let (x, y) = batch_tensors::<B>(x, labels, device);
    let loss = cross_entropy(model.forward(x), y);
    let loss_value = tensor_to_vec(loss.clone().inner())[0];
    let grads = loss.backward();
    let mut grad = vec![0.0; layout.num_params()];
    for (i, layer) in model.layers.iter().enumerate() {
        let l = i + 1;
        let off = layout.weight_offset(l);
        let gw = layer.weight.grad(&grads).map(tensor_to_vec).expect("every weight takes part in the loss");
        grad[off..off + gw.len()].copy_from_slice(&gw);
        if let Some(bias) = &layer.bias {
            let gb = bias.grad(&grads).map(tensor_to_vec).expect("every bias takes part in the loss");
            layout.bias_mut(&mut grad, l).copy_from_slice(&gb);
        }
    }
    (loss_value, grad)
}

/// Train θ with burn's own optimizers over the given batches, one step per batch.
pub fn train_steps<B: AutodiffBackend>(
    layout: &Layout,
    theta: &[f32],
    batches: &[(Vec<f32>, Vec<u32>)],
    config: &OptimizerConfig,
    device: &B::Device,
) -> Vec<f32> {
    let model = BurnMlp::<B>::from_flat(layout, theta, device);
    let weight_decay = (config.weight_decay != 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32));
    let model = match config.kind {
        OptimizerKind::Sgd => {
            let momentum = (config.momentum != 0.0)
                .then(|| MomentumConfig { momentum: config.momentum, dampening: 0.0, nesterov: false });
            let optim = SgdConfig::new().with_momentum(momentum).with_weight_decay(weight_decay).init();
            run_steps(model, optim, batches, config.lr, device)
        }
        OptimizerKind::Adam => {
            let optim = AdamConfig::new()
                .with_beta_1(config.beta1 as f32)
                .with_beta_2(config.beta2 as f32)
                .with_epsilon(config.eps as f32)
                .with_weight_decay(weight_decay)
                .init();
            run_steps(model, optim, batches, config.lr, device)
        }
    };
    model.to_flat(layout)
}

fn run_steps<B: AutodiffBackend, O: Optimizer<BurnMlp<B>, B>>(
    mut model: BurnMlp<B>,
    mut optim: O,
    batches: &[(Vec<f32>, Vec<u32>)],
    lr: f64,
    device: &B::Device,
) -> BurnMlp<B> {
    for (x, y) in batches {
        let (x, y) = batch_tensors::<B>(x, y, device);
        let loss = cross_entropy(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlp::{grad, model};
    use crate::rng;
    use burn::backend::{Autodiff, NdArray};

    type Cpu = NdArray<f32>;
    type Ad = Autodiff<Cpu>;

    fn example() -> (Layout, Vec<f32>, Vec<(Vec<f32>, Vec<u32>)>) {
        let layout = Layout(vec![6, 5, 4, 3]);
        let mut rng = rng::stream(5, "test", 0);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut rng, &mut theta, 0.0, 0.4);
        let batches = (0..3)
            .map(|b| {
                let mut x = vec![0.0; 8 * 6];
                rng::fill_normal(&mut rng, &mut x, 0.0, 1.0);
                (x, (0..8).map(|i| ((i + b) % 3) as u32).collect())
            })
            .collect();
        (layout, theta, batches)
    }

    #[test]
    fn flat_round_trip_and_forward_agree_with_the_fast_path() {
        let (layout, theta, batches) = example();
        let device = Default::default();
        let net = BurnMlp::<Cpu>::from_flat(&layout, &theta, &device);
        assert_eq!(net.to_flat(&layout), theta);
        let (x, _) = &batches[0];
        let burn_logits = tensor_to_vec(net.forward(batch_tensors::<Cpu>(x, &batches[0].1, &device).0));
        let fast = model::forward(&layout, &theta, x, 8);
        for (a, b) in burn_logits.iter().zip(&fast) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn gradients_agree_with_the_fast_path() {
        let (layout, theta, batches) = example();
        let (x, y) = &batches[0];
        let (burn_loss, burn_grad) = loss_and_grad::<Ad>(&layout, &theta, x, y, &Default::default());
        let mut fast_grad = vec![0.0; theta.len()];
        let stats = grad::loss_and_grad(&layout, &theta, x, y, &mut grad::Workspace::default(), &mut fast_grad);
        assert!((burn_loss as f64 - stats.loss).abs() < 1e-5);
        for (i, (a, b)) in burn_grad.iter().zip(&fast_grad).enumerate() {
            assert!((a - b).abs() < 1e-5, "param {i}: burn {a} vs fast {b}");
        }
    }

    fn fast_steps(layout: &Layout, theta: &[f32], batches: &[(Vec<f32>, Vec<u32>)], config: &OptimizerConfig) -> Vec<f32> {
        let mut theta = theta.to_vec();
        let mut opt = config.build(theta.len());
        let mut ws = grad::Workspace::default();
        let mut g = vec![0.0; theta.len()];
        for (x, y) in batches {
            grad::loss_and_grad(layout, &theta, x, y, &mut ws, &mut g);
            opt.step(&mut theta, &g);
        }
        theta
    }

    #[test]
    fn optimizer_steps_agree_with_burns_optimizers() {
        let (layout, theta, batches) = example();
        for config in [OptimizerConfig::sgd(0.1, 0.9, 1e-2), OptimizerConfig::adam(1e-2)] {
            let burn = train_steps::<Ad>(&layout, &theta, &batches, &config, &Default::default());
            let fast = fast_steps(&layout, &theta, &batches, &config);
            assert_ne!(fast, theta);
            for (i, (a, b)) in burn.iter().zip(&fast).enumerate() {
                assert!((a - b).abs() < 2e-5, "{:?} param {i}: burn {a} vs fast {b}", config.kind);
            }
        }
    }
}
