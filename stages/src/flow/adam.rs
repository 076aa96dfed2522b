//! Adam over a flat parameter arena (the fused CPU engine's optimizer), with the same update
//! as torch and burn: bias-corrected moments, `p ← p − lr·m̂/(√v̂ + ε)`.

/// Adam state: both moments and the step count. Serialized as little-endian bytes so a
/// checkpoint restores it bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub step: u64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    pub fn new(len: usize) -> Self {
        Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0, m: vec![0.0; len], v: vec![0.0; len] }
    }

    /// One update of `params` with `grads`.
    pub fn update(&mut self, lr: f64, params: &mut [f32], grads: &[f32]) {
        assert_eq!(params.len(), self.m.len());
        assert_eq!(grads.len(), self.m.len());
        self.step += 1;
        let t = self.step as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        let lr = lr as f32;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        super::state_bytes::encode(self.step, &[&self.m, &self.v])
    }

    /// The state saved by [`Adam::to_bytes`] for an arena of `len` values.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Self, String> {
        let (step, mut moments) = super::state_bytes::decode(bytes, 2, len, "optimizer state")?;
        let mut adam = Adam::new(len);
        adam.step = step;
        adam.v = moments.pop().unwrap_or_default();
        adam.m = moments.pop().unwrap_or_default();
        Ok(adam)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_coordinate_by_lr_against_the_gradient_sign() {
        let mut adam = Adam::new(3);
        let mut p = vec![1.0, 1.0, 1.0];
        adam.update(0.1, &mut p, &[2.0, -0.5, 0.0]);
        // m̂ = g, v̂ = g², so the step is lr·g/(|g| + ε)
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6 && p[2] == 1.0);
    }

    #[test]
    fn minimizes_a_quadratic_and_round_trips_its_state() {
        let mut adam = Adam::new(2);
        let mut p = vec![3.0f32, -2.0];
        for _ in 0..2000 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * x).collect();
            adam.update(0.01, &mut p, &g);
        }
        assert!(p.iter().all(|x| x.abs() < 1e-2), "{p:?}");
        let back = Adam::from_bytes(&adam.to_bytes(), 2).unwrap();
        assert_eq!(back, adam);
        assert!(Adam::from_bytes(&adam.to_bytes(), 3).is_err());
    }
}
