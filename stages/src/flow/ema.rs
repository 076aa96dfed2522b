//! An exponential moving average of the weights, the model a run hands out when `ema` is
//! set (off in the thesis, which trains 250,000 steps at a small constant rate).
//!
//! A run cut to a few thousand steps needs a large rate, and at a large rate the last
//! iterate jitters around the minimum; the average sits near its centre. Early on, the
//! effective decay is `min(decay, (1 + k)/(10 + k))` after k updates, so the average is not
//! anchored to the random initialization (the schedule of TensorFlow's
//! `ExponentialMovingAverage` with `num_updates`).

/// The averaged weights, in the flat order of [`super::train::FlowModel::params`].
#[derive(Clone, Debug, PartialEq)]
pub struct WeightAverage {
    decay: f64,
    updates: u64,
    values: Vec<f32>,
}

impl WeightAverage {
    /// An average that starts at `params`.
    pub fn new(decay: f64, params: Vec<f32>) -> Self {
        WeightAverage { decay, updates: 0, values: params }
    }

    /// The decay the next update uses.
    pub fn current_decay(&self) -> f64 {
        let k = self.updates as f64;
        self.decay.min((1.0 + k) / (10.0 + k))
    }

    /// Moves the average towards `params`.
    pub fn update(&mut self, params: &[f32]) {
        assert_eq!(params.len(), self.values.len(), "the model's parameter count changed");
        let decay = self.current_decay() as f32;
        for (avg, &p) in self.values.iter_mut().zip(params) {
            *avg = decay * *avg + (1.0 - decay) * p;
        }
        self.updates += 1;
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Little-endian bytes (update count, then the values): a checkpoint restores the
    /// average bit for bit.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::state_bytes::encode(self.updates, &[&self.values])
    }

    /// The average saved by [`WeightAverage::to_bytes`] for a model of `len` parameters.
    pub fn from_bytes(decay: f64, bytes: &[u8], len: usize) -> Result<Self, String> {
        let (updates, mut arrays) = super::state_bytes::decode(bytes, 1, len, "weight average")?;
        Ok(WeightAverage { decay, updates, values: arrays.pop().unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_updates_follow_the_weights_and_late_ones_use_the_decay() {
        let mut avg = WeightAverage::new(0.999, vec![0.0]);
        // First update: decay 1/10, so the average moves 90% of the way.
        avg.update(&[1.0]);
        assert!((avg.values()[0] - 0.9).abs() < 1e-6, "{:?}", avg.values());
        for _ in 0..20_000 {
            avg.update(&[1.0]);
        }
        assert_eq!(avg.current_decay(), 0.999);
        assert!((avg.values()[0] - 1.0).abs() < 1e-5);
    }

    #[test]
    fn averages_out_oscillation_around_a_centre() {
        // Weights that alternate around 2.0 with amplitude 0.5: the last iterate is 0.5 off,
        // the average within 0.01 of the centre.
        let mut avg = WeightAverage::new(0.99, vec![0.0]);
        let mut last = 0.0;
        for k in 0..5_000 {
            last = if k % 2 == 0 { 2.5 } else { 1.5 };
            avg.update(&[last]);
        }
        assert!((last - 2.0f32).abs() == 0.5);
        assert!((avg.values()[0] - 2.0).abs() < 0.01, "{:?}", avg.values());
    }

    #[test]
    fn round_trips_through_bytes() {
        let mut avg = WeightAverage::new(0.9, vec![0.5, -1.0, 3.0]);
        avg.update(&[1.0, 2.0, 3.0]);
        let back = WeightAverage::from_bytes(0.9, &avg.to_bytes(), 3).unwrap();
        assert_eq!(back, avg);
        assert!(WeightAverage::from_bytes(0.9, &avg.to_bytes(), 4).is_err());
    }
}
