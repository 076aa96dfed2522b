//! SGD with momentum and weight decay, and Adam, with PyTorch's exact update rules
//! (`torch.optim.SGD` / `torch.optim.Adam`, single-tensor CPU path, no amsgrad, no
//! Nesterov, no dampening), on a flat parameter vector.

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

crate::words!(OptimizerKind, "optimizer", { Adam = "adam", Sgd = "sgd" });

/// Hyper-parameters of either optimizer (PyTorch defaults for the unused ones).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// SGD only.
    pub momentum: f64,
    pub weight_decay: f64,
    /// Adam only.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl OptimizerConfig {
    /// docs/science.md 2.2: Adam, lr 1e-3, β = (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig { kind: OptimizerKind::Adam, lr, momentum: 0.0, weight_decay: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    /// docs/science.md 2.3: SGD, lr 0.1, momentum 0.9, weight decay 1e-5.
    pub fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        OptimizerConfig { kind: OptimizerKind::Sgd, lr, momentum, weight_decay, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }

    pub fn build(&self, params: usize) -> Optimizer {
        Optimizer { config: *self, step: 0, first: vec![0.0; params], second: vec![0.0; params] }
    }
}

/// Optimizer state for one flat parameter vector.
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// Number of steps taken.
    step: u64,
    /// SGD: the momentum buffer. Adam: `exp_avg`.
    first: Vec<f32>,
    /// Adam: `exp_avg_sq`.
    second: Vec<f32>,
}

impl Optimizer {
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update of θ with gradient `grad` (the gradient of the loss only; weight decay is
    /// added here as PyTorch does).
    pub fn step(&mut self, theta: &mut [f32], grad: &[f32]) {
        assert_eq!(theta.len(), grad.len(), "θ and gradient lengths differ");
        assert_eq!(theta.len(), self.first.len(), "optimizer was built for another θ length");
        self.step += 1;
        match self.config.kind {
            OptimizerKind::Sgd => self.sgd_step(theta, grad),
            OptimizerKind::Adam => self.adam_step(theta, grad),
        }
    }

    fn sgd_step(&mut self, theta: &mut [f32], grad: &[f32]) {
        let c = &self.config;
        let (lr, momentum, wd) = (c.lr as f32, c.momentum as f32, c.weight_decay as f32);
        let first_step = self.step == 1;
        for ((p, &g), buf) in theta.iter_mut().zip(grad).zip(self.first.iter_mut()) {
            // g ← ∇L + wd·θ
            let g = if wd != 0.0 { g + wd * *p } else { g };
            let d = if momentum != 0.0 {
                // buf ← g on the first step, then momentum·buf + g (dampening 0)
                *buf = if first_step { g } else { *buf * momentum + g };
                *buf
            } else {
                g
            };
            *p += -lr * d;
        }
    }

    fn adam_step(&mut self, theta: &mut [f32], grad: &[f32]) {
        let c = &self.config;
        let t = self.step as i32;
        // Scalars are computed in f64 as Python does, then used as f32 tensor scalars.
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2 = 1.0 - c.beta2.powi(t);
        let step_size = (c.lr / bias_correction1) as f32;
        let bias_correction2_sqrt = bias_correction2.sqrt() as f32;
        let (w1, beta2, one_minus_beta2) = ((1.0 - c.beta1) as f32, c.beta2 as f32, (1.0 - c.beta2) as f32);
        let (eps, wd) = (c.eps as f32, c.weight_decay as f32);
        for (((p, &g), m), v) in theta.iter_mut().zip(grad).zip(self.first.iter_mut()).zip(self.second.iter_mut()) {
            let g = if wd != 0.0 { g + wd * *p } else { g };
            // exp_avg.lerp_(grad, 1 − β1): weight < 0.5, so m + w·(g − m)
            *m += w1 * (g - *m);
            // exp_avg_sq.mul_(β2).addcmul_(grad, grad, value = 1 − β2)
            *v = *v * beta2 + one_minus_beta2 * g * g;
            // denom = sqrt(v)/sqrt(bc2) + eps;  θ.addcdiv_(m, denom, value = −step_size)
            let denom = v.sqrt() / bias_correction2_sqrt + eps;
            *p += -step_size * (*m / denom);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two SGD steps on θ = [1, −2] with gradients [0.5, 0.25] then [−1, 2], lr 0.1,
    /// momentum 0.9, wd 0.01, worked by hand with PyTorch's rule:
    /// step 1: g = [0.5 + 0.01, 0.25 − 0.02] = [0.51, 0.23] = buf; θ = [0.949, −2.023]
    /// step 2: g = [−1 + 0.00949, 2 − 0.02023] = [−0.99051, 1.97977];
    ///         buf = 0.9·[0.51, 0.23] + g = [−0.53151, 2.18677]; θ = [1.002151, −2.241677]
    #[test]
    fn sgd_momentum_matches_hand_computed_pytorch_steps() {
        let mut theta = vec![1.0f32, -2.0];
        let mut opt = OptimizerConfig::sgd(0.1, 0.9, 0.01).build(2);
        opt.step(&mut theta, &[0.5, 0.25]);
        assert!((theta[0] - 0.949).abs() < 1e-6 && (theta[1] + 2.023).abs() < 1e-6, "{theta:?}");
        opt.step(&mut theta, &[-1.0, 2.0]);
        assert!((theta[0] - 1.002151).abs() < 1e-6 && (theta[1] + 2.241677).abs() < 1e-6, "{theta:?}");
    }

    /// Adam, lr 0.1, default betas/eps, θ = [1], gradients 2 then −1:
    /// step 1: m = 0.2, v = 0.004, m̂ = 2, v̂ = 4 → θ = 1 − 0.1·2/(2 + 1e-8) = 0.9 (+5e-10)
    /// step 2: m = 0.18 − 0.1 = 0.08, v = 0.003996 + 0.001 = 0.004996;
    ///         m̂ = 0.08/0.19 = 0.42105263, v̂ = 0.004996/0.001999 = 2.4992496,
    ///         θ = 0.9 − 0.1·0.42105263/1.5808952 = 0.87336630
    #[test]
    fn adam_matches_hand_computed_pytorch_steps() {
        let mut theta = vec![1.0f32];
        let mut opt = OptimizerConfig::adam(0.1).build(1);
        opt.step(&mut theta, &[2.0]);
        assert!((theta[0] - 0.9).abs() < 1e-6, "{theta:?}");
        opt.step(&mut theta, &[-1.0]);
        assert!((theta[0] - 0.873_366_30).abs() < 1e-6, "{theta:?}");
        assert_eq!(opt.steps_taken(), 2);
    }
}
