//! From the network's output to the estimate `x̂1` (docs/science.md §5.6): one place, shared
//! by training (both engines) and sampling, so the two can never disagree.
//!
//! The thesis reads the output as `x̂1` itself ([`Output::Target`]). [`Output::Velocity`]
//! reads it as a velocity, `x̂1 = x_t + (1 − t)·out`; the loss stays the x1 loss of §5.7.
//! Why the option exists: a freshly initialized small network's output is often nearly
//! constant over the edges (its predicted neuron rows all have about the same norm), and
//! for the sphere flows `canon` then divides the predicted biases by predicted neuron norms
//! that may be almost 0: at d_E = 8, 4 of 20 seeds start 15–600,000× above the mean
//! predictor (the `flow_init` example), and one trained from such a seed sampled networks of
//! accuracy 0.17 where other seeds reached 0.96. With the velocity reading the fresh model
//! predicts about `x_t`, which is on (or inside) the spheres, so every seed starts near the
//! loss of `x_t` itself.

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::geometry::canon::canonicalize;
use crate::layout::Layout;

/// What the network's output stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// The output is `x̂1` (the thesis).
    #[default]
    Target,
    /// The output is a velocity: `x̂1 = x_t + (1 − t)·out`.
    Velocity,
}

crate::words!(Output, "output", { Target = "target", Velocity = "velocity" });

impl Output {
    pub fn is_target(&self) -> bool {
        *self == Output::Target
    }
}

/// Turns outputs into estimates for one layout.
#[derive(Clone, Debug)]
pub struct Estimator {
    pub output: Output,
    /// Canonicalize the estimate (Normalized and Geometric flows).
    pub canonical: bool,
    pub layout: Layout,
}

impl Estimator {
    /// `x̂1` for the `[B, P]` output `out` at `(x_t [B, P], t [B])`.
    pub fn apply<B: Backend>(&self, out: Tensor<B, 2>, xt: Tensor<B, 2>, t: Tensor<B, 1>) -> Tensor<B, 2> {
        let guess = match self.output {
            Output::Target => out,
            Output::Velocity => xt + out * t.neg().add_scalar(1.0).unsqueeze_dim(1),
        };
        self.finish(guess)
    }

    /// A guess of `x1`, canonicalized when the flow is.
    pub fn finish<B: Backend>(&self, guess: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.canonical {
            canonicalize(guess, &self.layout)
        } else {
            guess
        }
    }

    /// [`Estimator::apply`] on host rows, on the CPU.
    pub fn apply_rows(&self, out: Vec<f32>, xt: &[f32], t: &[f32]) -> Vec<f32> {
        if self.output.is_target() && !self.canonical {
            return out;
        }
        type Cpu = burn::backend::NdArray<f32>;
        let p = self.layout.num_params();
        let device = Default::default();
        let tensor = |values: &[f32]| crate::rows::rows_tensor::<Cpu>(values, p, &device);
        let times = crate::rows::column_tensor::<Cpu>(t, &device);
        crate::rows::host_rows(self.apply(tensor(&out), tensor(xt), times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cpu = burn::backend::NdArray<f32>;

    #[test]
    fn the_velocity_reading_steps_the_rest_of_the_way_from_x_t() {
        let layout = Layout::new(vec![2, 2, 1]).unwrap();
        let p = layout.num_params();
        let xt: Vec<f32> = (0..2 * p).map(|i| i as f32 * 0.1).collect();
        let out: Vec<f32> = (0..2 * p).map(|i| 1.0 - i as f32 * 0.05).collect();
        let t = [0.25f32, 0.9];
        let target = Estimator { output: Output::Target, canonical: false, layout: layout.clone() };
        assert_eq!(target.apply_rows(out.clone(), &xt, &t), out);
        let velocity = Estimator { output: Output::Velocity, ..target.clone() };
        let got = velocity.apply_rows(out.clone(), &xt, &t);
        for (i, g) in got.iter().enumerate() {
            let want = xt[i] + (1.0 - t[i / p]) * out[i];
            assert!((g - want).abs() < 1e-6, "coordinate {i}: {g} vs {want}");
        }
        // At t = 1 the estimate is x_t whatever the network says.
        assert_eq!(velocity.apply_rows(out, &xt, &[1.0, 1.0]), xt);
    }

    #[test]
    fn sphere_flows_canonicalize_after_the_reading() {
        let layout = Layout::new(vec![2, 2, 1]).unwrap();
        let p = layout.num_params();
        let xt: Vec<f32> = (0..p).map(|i| 0.3 + i as f32 * 0.2).collect();
        let out: Vec<f32> = (0..p).map(|i| 0.5 - i as f32 * 0.1).collect();
        let t = [0.5f32];
        let estimator = Estimator { output: Output::Velocity, canonical: true, layout: layout.clone() };
        let got = estimator.apply_rows(out.clone(), &xt, &t);
        let guess: Vec<f32> = xt.iter().zip(&out).map(|(x, o)| x + 0.5 * o).collect();
        let device = Default::default();
        let want = canonicalize(Tensor::<Cpu, 2>::from_data(burn::tensor::TensorData::new(guess, [1, p]), &device), &layout)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        got.iter().zip(&want).for_each(|(g, w)| assert!((g - w).abs() < 1e-6, "{g} vs {w}"));
    }
}
