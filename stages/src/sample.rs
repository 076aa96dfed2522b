//! Euler sampling of a trained flow (docs/science.md §7).
//!
//! The main type is [`Sampler`]. On the grid `t_k = k/(n−1)` it performs n−1 updates: noise
//! `ε·ξ` when `t_k > 0.8`, a prediction `x̂1`, a velocity by the chosen [`VelocityRule`],
//! optional guidance `v ← v + λ·F(x)`, then a step (straight for the Euclidean and Normalized
//! flows; per-sphere `expmap` and straight on biases for the Geometric flow). Predictions
//! come from a [`Predictor`], so the rule can be tested with closed-form predictors.

use serde::{Deserialize, Serialize};

use crate::geometry::{product::ProductGeometry, Geometry};
use crate::noise::ResumableRng;

/// Noise is added only after this time (hard-coded in the code).
pub const NOISE_AFTER: f32 = 0.8;

/// How the velocity is formed from the prediction (docs/science.md §7.2–7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VelocityRule {
    /// `v = x̂1 − x0` with x0 the trajectory's start (faithful).
    X1MinusX0,
    /// `v = (x̂1 − x)/(1 − t)`, or `log_x(x̂1)/(1 − t)` on spheres.
    Denoiser,
}

crate::words!(VelocityRule, "velocity rule", { X1MinusX0 = "x1-minus-x0", Denoiser = "denoiser" });

/// Something that predicts `x̂1` for a `[B, P]` batch at time `t` (already canonicalized
/// when the flow is).
pub trait Predictor {
    fn predict(&mut self, x: &[f32], t: f32) -> Vec<f32>;
}

impl<F: FnMut(&[f32], f32) -> Vec<f32>> Predictor for F {
    fn predict(&mut self, x: &[f32], t: f32) -> Vec<f32> {
        self(x, t)
    }
}

/// A guidance field `F(x)` for a `[B, P]` batch (docs/science.md §7.5).
pub trait Guidance {
    fn field(&mut self, x: &[f32], rng: &mut ResumableRng) -> Vec<f32>;
}

/// What a sampling run did, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleTrace {
    pub updates: usize,
    pub noisy_updates: usize,
}

#[derive(Clone, Debug)]
pub struct Sampler {
    pub geometry: Geometry,
    /// Needed for the Geometric flow's sphere steps and the denoiser rule's logmap.
    pub product: ProductGeometry,
    /// Grid points n (≥ 2): n−1 updates.
    pub steps: usize,
    pub rule: VelocityRule,
    pub noise_scale: f64,
    pub guidance_scale: f64,
    /// Project sphere points back after each step (denoiser ablations only).
    pub reproject: bool,
}

impl Sampler {
    /// Maps the `[B, P]` batch `x0` to samples.
    pub fn run(
        &self,
        x0: &[f32],
        predictor: &mut dyn Predictor,
        mut guidance: Option<&mut dyn Guidance>,
        rng: &mut ResumableRng,
    ) -> (Vec<f32>, SampleTrace) {
        assert!(self.steps >= 2, "the Euler grid needs at least two points");
        let dt = 1.0 / (self.steps - 1) as f32;
        let riemannian = self.geometry.is_riemannian();
        let mut x = x0.to_vec();
        let mut trace = SampleTrace::default();
        for k in 0..self.steps - 1 {
            let t = k as f32 * dt;
            if t > NOISE_AFTER && self.noise_scale > 0.0 {
                for v in x.iter_mut() {
                    *v += (self.noise_scale * rng.normal()) as f32;
                }
                trace.noisy_updates += 1;
            }
            let x1_hat = predictor.predict(&x, t);
            let mut velocity: Vec<f32> = match self.rule {
                VelocityRule::X1MinusX0 => x1_hat.iter().zip(x0).map(|(a, b)| a - b).collect(),
                VelocityRule::Denoiser if riemannian => {
                    self.product.log(&x, &x1_hat).into_iter().map(|v| v / (1.0 - t)).collect()
                }
                VelocityRule::Denoiser => x1_hat.iter().zip(&x).map(|(a, b)| (a - b) / (1.0 - t)).collect(),
            };
            if let Some(g) = guidance.as_deref_mut() {
                if self.guidance_scale > 0.0 {
                    let field = g.field(&x, rng);
                    let lambda = self.guidance_scale as f32;
                    velocity.iter_mut().zip(&field).for_each(|(v, f)| *v += lambda * f);
                }
            }
            if riemannian {
                let step: Vec<f32> = velocity.iter().map(|v| v * dt).collect();
                self.product.step(&mut x, &step);
                if self.reproject {
                    self.product.project(&mut x);
                }
            } else {
                x.iter_mut().zip(&velocity).for_each(|(xi, v)| *xi += dt * v);
            }
            trace.updates += 1;
        }
        (x, trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn sampler(geometry: Geometry, layout: &Layout, steps: usize, rule: VelocityRule, noise: f64) -> Sampler {
        Sampler {
            geometry,
            product: ProductGeometry::new(layout),
            steps,
            rule,
            noise_scale: noise,
            guidance_scale: 0.0,
            reproject: false,
        }
    }

    #[test]
    fn a_constant_predictor_gives_the_constant() {
        let layout = Layout(vec![3, 2, 2]);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(1);
        let x0 = rng.normal_vec(4 * p, 0.0, 1.0);
        let c: Vec<f32> = (0..4 * p).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let mut constant = |_: &[f32], _: f32| c.clone();
        let (out, _) = sampler(Geometry::Euclidean, &layout, 17, VelocityRule::X1MinusX0, 0.0)
            .run(&x0, &mut constant, None, &mut rng);
        for (a, b) in out.iter().zip(&c) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn the_faithful_rule_returns_the_mean_of_the_predictions() {
        let layout = Layout(vec![2, 2, 1]);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(2);
        let x0 = rng.normal_vec(2 * p, 0.0, 1.0);
        let mut seen: Vec<Vec<f32>> = Vec::new();
        let mut predictor = |x: &[f32], t: f32| {
            let pred: Vec<f32> = x.iter().map(|v| (v * 3.0).sin() + t).collect();
            seen.push(pred.clone());
            pred
        };
        let (out, trace) = sampler(Geometry::Normalized, &layout, 10, VelocityRule::X1MinusX0, 0.0)
            .run(&x0, &mut predictor, None, &mut rng);
        assert_eq!(trace.updates, 9);
        for i in 0..out.len() {
            let mean = seen.iter().map(|s| s[i]).sum::<f32>() / seen.len() as f32;
            assert!((out[i] - mean).abs() < 1e-5, "{} vs {mean}", out[i]);
        }
    }

    #[test]
    fn one_hundred_grid_points_give_99_updates_and_19_noisy_ones() {
        let layout = Layout(vec![2, 2, 1]);
        let mut rng = ResumableRng::seed_from(3);
        let x0 = vec![0.0; layout.num_params()];
        let mut zero = |x: &[f32], _: f32| vec![0.0; x.len()];
        let (_, trace) = sampler(Geometry::Euclidean, &layout, 100, VelocityRule::X1MinusX0, 0.05)
            .run(&x0, &mut zero, None, &mut rng);
        assert_eq!(trace, SampleTrace { updates: 99, noisy_updates: 19 });
    }

    /// p0 = N(0,1), p1 = N(1,1), independent coupling: `E[x1 | x_t] = 1 + t (x_t − t) / ((1−t)² + t²)`.
    fn variance_after_sampling(rule: VelocityRule, noise: f64) -> f64 {
        let layout = Layout(vec![1, 1]); // two coordinates, used as independent 1-D samples
        let mut rng = ResumableRng::seed_from(4);
        let count = 20_000;
        let x0 = rng.normal_vec(count, 0.0, 1.0);
        let mut posterior_mean = |x: &[f32], t: f32| -> Vec<f32> {
            let var = (1.0 - t).powi(2) + t * t;
            x.iter().map(|v| 1.0 + t * (v - t) / var).collect()
        };
        let (out, _) = sampler(Geometry::Euclidean, &layout, 100, rule, noise).run(&x0, &mut posterior_mean, None, &mut rng);
        let mean = out.iter().map(|&v| v as f64).sum::<f64>() / count as f64;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        out.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / count as f64
    }

    #[test]
    fn the_denoiser_rule_keeps_the_variance_the_faithful_rule_shrinks_it() {
        let faithful = variance_after_sampling(VelocityRule::X1MinusX0, 0.0);
        let denoiser = variance_after_sampling(VelocityRule::Denoiser, 0.0);
        let noisy = variance_after_sampling(VelocityRule::X1MinusX0, 0.05);
        assert!((faithful - 0.23).abs() < 0.03, "faithful variance {faithful}");
        assert!((denoiser - 0.96).abs() < 0.05, "denoiser variance {denoiser}");
        assert!((noisy - 0.29).abs() < 0.04, "noisy faithful variance {noisy}");
    }

    #[test]
    fn geometric_steps_follow_spheres_for_tangent_velocities() {
        let layout = Layout(vec![3, 2, 2]);
        let product = ProductGeometry::new(&layout);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(5);
        let mut x0 = rng.normal_vec(p, 0.0, 1.0);
        let mut target = rng.normal_vec(p, 0.0, 1.0);
        product.project(&mut x0);
        product.project(&mut target);
        let mut fixed = |_: &[f32], _: f32| target.clone();
        let (out, _) = sampler(Geometry::Geometric, &layout, 50, VelocityRule::Denoiser, 0.0)
            .run(&x0, &mut fixed, None, &mut rng);
        assert!(product.max_norm_error(&out) < 1e-3);
        for (a, b) in out.iter().zip(&target) {
            assert!((a - b).abs() < 0.05, "{a} vs {b}");
        }
    }
}
