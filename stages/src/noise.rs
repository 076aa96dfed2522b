//! Seeded random streams for the flow-matching stages.
//!
//! The main type is [`ResumableRng`], a xoshiro256++ generator whose whole state is four words: a
//! checkpoint stores it, so a resumed training run draws exactly the numbers an
//! uninterrupted run would have drawn. (`crate::rng` holds the other generator: ChaCha8
//! streams derived from a seed, a purpose and an index, re-derived rather than stored;
//! the two draw different numbers from the same seed.)

use serde::{Deserialize, Serialize};

/// xoshiro256++ with Box–Muller normals. The state is plain data for checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableRng {
    s: [u64; 4],
}

impl ResumableRng {
    /// Expands a seed into a full state with splitmix64 (never all zero).
    pub fn seed_from(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        ResumableRng { s: [next(), next(), next(), next()] }
    }

    /// An independent stream for a named purpose (source set, init, sampling, ...), so
    /// that adding draws to one purpose never shifts another.
    pub fn derive(seed: u64, purpose: &str) -> Self {
        let tag = blake3::hash(purpose.as_bytes());
        let mut word = [0u8; 8];
        word.copy_from_slice(&tag.as_bytes()[..8]);
        ResumableRng::seed_from(seed ^ u64::from_le_bytes(word))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`), by rejection so that it is unbiased.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "cannot draw from an empty range");
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// Standard normal draw (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `n` draws of `mean + std·ξ` as f32.
    pub fn normal_vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n).map(|_| (mean + std * self.normal()) as f32).collect()
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_state_round_trips() {
        let mut a = ResumableRng::seed_from(7);
        let mut b = ResumableRng::seed_from(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let saved: ResumableRng = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(saved, a);
        assert_ne!(ResumableRng::derive(7, "source").next_u64(), ResumableRng::derive(7, "time").next_u64());
    }

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut r = ResumableRng::seed_from(1);
        let xs: Vec<f64> = (0..200_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }
}
