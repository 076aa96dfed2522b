//! Time sampling and probability paths (docs/science.md §5.4–5.5), on host batches.
//!
//! `x_t = (1−t)·x0 + t·x1 + σ·ε` for the Euclidean and Normalized flows (chords, never
//! projected); for the Geometric flow the geodesic on every sphere point and the straight
//! line on biases, without noise.

use crate::geometry::{product::ProductGeometry, Geometry};
use crate::noise::ResumableRng;

/// `t ~ Beta(1, 2)` by inversion: `t = 1 − sqrt(1 − U)` (density 2(1−t), mean 1/3).
pub fn sample_time(rng: &mut ResumableRng) -> f32 {
    (1.0 - (1.0 - rng.uniform()).sqrt()) as f32
}

/// The training input `x_t` for paired `[B, P]` batches `x0`, `x1` and times `t` `[B]`.
pub fn interpolate(
    geometry: Geometry,
    product: &ProductGeometry,
    x0: &[f32],
    x1: &[f32],
    t: &[f32],
    sigma: f64,
    rng: &mut ResumableRng,
) -> Vec<f32> {
    if geometry.is_riemannian() {
        return product.interpolate(x0, x1, t);
    }
    let p = x0.len() / t.len();
    x0.iter()
        .zip(x1)
        .enumerate()
        .map(|(k, (a, b))| {
            let tk = t[k / p];
            let noise = if sigma > 0.0 { (sigma * rng.normal()) as f32 } else { 0.0 };
            (1.0 - tk) * a + tk * b + noise
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    #[test]
    fn beta_one_two_has_mean_one_third_and_three_quarters_below_half() {
        let mut rng = ResumableRng::seed_from(12);
        let n = 200_000;
        let ts: Vec<f32> = (0..n).map(|_| sample_time(&mut rng)).collect();
        let mean = ts.iter().map(|&t| t as f64).sum::<f64>() / n as f64;
        let below = ts.iter().filter(|&&t| t < 0.5).count() as f64 / n as f64;
        assert!((mean - 1.0 / 3.0).abs() < 0.005, "mean {mean}");
        assert!((below - 0.75).abs() < 0.005, "P(t<0.5) {below}");
        assert!(ts.iter().all(|&t| (0.0..1.0).contains(&t)));
    }

    #[test]
    fn euclidean_path_is_the_chord_plus_sigma_noise() {
        let layout = Layout(vec![2, 2, 1]);
        let product = ProductGeometry::new(&layout);
        let p = layout.num_params();
        let mut rng = ResumableRng::seed_from(1);
        let x0 = rng.normal_vec(2 * p, 0.0, 1.0);
        let x1 = rng.normal_vec(2 * p, 1.0, 1.0);
        let xt = interpolate(Geometry::Normalized, &product, &x0, &x1, &[0.25, 1.0], 0.0, &mut rng);
        for k in 0..p {
            assert!((xt[k] - (0.75 * x0[k] + 0.25 * x1[k])).abs() < 1e-6);
            assert!((xt[p + k] - x1[p + k]).abs() < 1e-6);
        }
    }
}
