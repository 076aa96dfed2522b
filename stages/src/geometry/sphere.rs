//! Unit-sphere operations with geoopt's float32 conventions (docs/science.md §5.9).
//!
//! Every function acts on one sphere point given as a slice; the product geometry
//! ([`super::product`]) gathers the points of a network and calls these. Faithful quirks are
//! kept on purpose: `dist` is clamped (a floor of ≈0.01414 rad), `expmap` does not project
//! its tangent argument, and `logmap` rescales even nearly identical points.

/// geoopt's float32 epsilon.
pub const EPS: f32 = 1e-4;

pub fn inner(u: &[f32], v: &[f32]) -> f32 {
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

pub fn norm(u: &[f32]) -> f32 {
    inner(u, u).sqrt()
}

/// `y / ‖y‖`.
pub fn projx(y: &[f32]) -> Vec<f32> {
    let n = norm(y);
    y.iter().map(|v| v / n).collect()
}

/// `u − ⟨x,u⟩·x`: the tangent part of `u` at `x`.
pub fn proju(x: &[f32], u: &[f32]) -> Vec<f32> {
    let c = inner(x, u);
    x.iter().zip(u).map(|(xi, ui)| ui - c * xi).collect()
}

/// `acos(clamp(⟨x,y⟩, −1+EPS, 1−EPS))`; its range is [0.01414, 3.1275].
pub fn dist(x: &[f32], y: &[f32]) -> f32 {
    inner(x, y).clamp(-1.0 + EPS, 1.0 - EPS).acos()
}

/// `x·cos θ + u·sin θ/θ` with θ = ‖u‖, or the retraction `projx(x+u)` for tiny θ. The
/// argument is not projected onto the tangent space, so a non-tangent `u` leaves the sphere.
pub fn expmap(x: &[f32], u: &[f32]) -> Vec<f32> {
    let theta = norm(u);
    if theta > EPS {
        let (s, c) = (theta.sin() / theta, theta.cos());
        x.iter().zip(u).map(|(xi, ui)| xi * c + ui * s).collect()
    } else {
        let sum: Vec<f32> = x.iter().zip(u).map(|(a, b)| a + b).collect();
        projx(&sum)
    }
}

/// The tangent vector at `x` pointing to `y` with length `dist(x, y)`.
pub fn logmap(x: &[f32], y: &[f32]) -> Vec<f32> {
    let diff: Vec<f32> = y.iter().zip(x).map(|(a, b)| a - b).collect();
    let u = proju(x, &diff);
    let d = dist(x, y);
    if d > EPS {
        let scale = d / norm(&u).max(EPS);
        u.iter().map(|v| v * scale).collect()
    } else {
        u
    }
}

/// The geodesic `γ(t) = expmap(x0, t·logmap(x0, x1))`.
pub fn geodesic(x0: &[f32], x1: &[f32], t: f32) -> Vec<f32> {
    let u: Vec<f32> = logmap(x0, x1).into_iter().map(|v| v * t).collect();
    expmap(x0, &u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::ResumableRng;

    fn random_point(rng: &mut ResumableRng, n: usize) -> Vec<f32> {
        projx(&rng.normal_vec(n, 0.0, 1.0))
    }

    #[test]
    fn expmap_inverts_logmap_beyond_the_floor() {
        let mut rng = ResumableRng::seed_from(3);
        let mut checked = 0;
        for n in [2usize, 3, 16, 30, 100] {
            for _ in 0..50 {
                let x = random_point(&mut rng, n);
                let y = random_point(&mut rng, n);
                // Both ends of the clamp distort the distance: stay away from them.
                let d = dist(&x, &y);
                if !(0.02..=std::f32::consts::PI - 0.02).contains(&d) {
                    continue;
                }
                let back = expmap(&x, &logmap(&x, &y));
                for (a, b) in back.iter().zip(&y) {
                    assert!((a - b).abs() < 2e-3, "n={n}: {a} vs {b}");
                }
                checked += 1;
            }
        }
        assert!(checked > 200);
    }

    #[test]
    fn dist_to_itself_is_the_float32_floor() {
        let mut rng = ResumableRng::seed_from(4);
        let x = random_point(&mut rng, 30);
        let d = dist(&x, &x);
        assert!((d - 0.014_142).abs() < 2e-5, "floor {d}");
        // and acos(1 - 1e-4) is that floor
        assert!((d - (1.0f32 - 1e-4).acos()).abs() < 1e-6);
    }

    #[test]
    fn expmap_with_a_non_tangent_vector_leaves_the_sphere() {
        let x = vec![1.0f32, 0.0, 0.0];
        let u = vec![0.5f32, 0.5, 0.0]; // has a normal component
        let y = expmap(&x, &u);
        assert!((norm(&y) - 1.0).abs() > 1e-2, "norm {}", norm(&y));
        let tangent = proju(&x, &u);
        assert!((norm(&expmap(&x, &tangent)) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn geodesic_ends_at_both_points() {
        let mut rng = ResumableRng::seed_from(5);
        let x0 = random_point(&mut rng, 16);
        let x1 = random_point(&mut rng, 16);
        let start = geodesic(&x0, &x1, 0.0);
        let end = geodesic(&x0, &x1, 1.0);
        let mid = geodesic(&x0, &x1, 0.5);
        for i in 0..16 {
            assert!((start[i] - x0[i]).abs() < 1e-5);
            assert!((end[i] - x1[i]).abs() < 1e-3);
        }
        assert!((dist(&x0, &mid) - dist(&mid, &x1)).abs() < 1e-3);
    }
}
