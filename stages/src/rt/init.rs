//! Deterministic parameter initialization for the relational transformer (docs/science.md §6.7).
//!
//! The main type is [`ParamInit`]: it draws every parameter from one seeded [`ResumableRng`] and
//! numbers parameters in creation order, so the same seed gives the same model, bit for bit
//! and with the same parameter ids, whatever else runs in the process. That makes saved
//! models byte-identical across interrupted and uninterrupted runs.

use burn::module::{Param, ParamId};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::noise::ResumableRng;

/// How a linear layer's weights and biases are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearInit {
    /// `U(±sqrt(6/(fan_in+fan_out)))` weights and zero biases (RT-internal layers).
    XavierUniform,
    /// PyTorch's `nn.Linear` default: weights and biases `U(±1/sqrt(fan_in))`
    /// (graph constructor and output heads).
    TorchDefault,
}

pub struct ParamInit<'d, B: Backend> {
    rng: ResumableRng,
    next_id: u64,
    device: &'d B::Device,
}

impl<'d, B: Backend> ParamInit<'d, B> {
    pub fn new(seed: u64, device: &'d B::Device) -> Self {
        ParamInit { rng: ResumableRng::derive(seed, "relational-transformer-init"), next_id: 1, device }
    }

    pub fn device(&self) -> &'d B::Device {
        self.device
    }

    fn param<const D: usize>(&mut self, values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<B, D>> {
        let id = ParamId::from(self.next_id);
        self.next_id += 1;
        let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), self.device);
        Param::initialized(id, tensor.require_grad())
    }

    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n).map(|_| ((2.0 * self.rng.uniform() - 1.0) * bound) as f32).collect()
    }

    /// A `[d_in → d_out]` linear layer (burn stores the weight as `[d_in, d_out]`).
    pub fn linear(&mut self, d_in: usize, d_out: usize, with_bias: bool, init: LinearInit) -> Linear<B> {
        let (weight_bound, bias_bound) = match init {
            LinearInit::XavierUniform => ((6.0 / (d_in + d_out) as f64).sqrt(), 0.0),
            LinearInit::TorchDefault => {
                let k = 1.0 / (d_in as f64).sqrt();
                (k, k)
            }
        };
        let w = self.uniform(d_in * d_out, weight_bound);
        let weight = self.param(w, [d_in, d_out]);
        let bias = with_bias.then(|| {
            let b = self.uniform(d_out, bias_bound);
            self.param(b, [d_out])
        });
        Linear { weight, bias }
    }

    /// LayerNorm over `d` features, eps 1e-5, γ = 1, β = 0.
    pub fn layer_norm(&mut self, d: usize) -> LayerNorm<B> {
        let mut ln = LayerNormConfig::new(d).with_epsilon(1e-5).init(self.device);
        ln.gamma = self.param(vec![1.0; d], [d]);
        ln.beta = Some(self.param(vec![0.0; d], [d]));
        ln
    }

    /// `n` zeros (the readout offset: the model starts as the one without it).
    pub fn zeros(&mut self, n: usize) -> Param<Tensor<B, 1>> {
        self.param(vec![0.0; n], [n])
    }

    /// A `[rows, cols]` table drawn from N(0, 1) (positional embeddings).
    pub fn normal_table(&mut self, rows: usize, cols: usize) -> Param<Tensor<B, 2>> {
        let v = self.rng.normal_vec(rows * cols, 0.0, 1.0);
        self.param(v, [rows, cols])
    }
}
