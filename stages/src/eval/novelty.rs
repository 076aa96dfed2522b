//! Are samples new networks or copies of the flow's targets? The Euclidean distance from
//! each sample to its nearest training target, beside the distance from each target to its
//! nearest other target: a flow that memorized its targets classifies well and proves
//! nothing, and its samples' distances fall to 0, far below the targets' own spacing.
//!
//! Distances are between flat weight vectors in the representation the flow was trained
//! on (aligned, or canonical for the sphere flows), so the sample set and the target set
//! must share a layout.

use rayon::prelude::*;

/// Squared Euclidean distance, accumulated in f64.
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum()
}

fn squared_norm(a: &[f32]) -> f64 {
    a.iter().map(|&x| f64::from(x).powi(2)).sum()
}

/// Rows per block of the Gram matrix (bounds its memory to 64 x targets floats).
const BLOCK: usize = 64;

/// For each of `points`, the distance to the nearest of `targets` (rows of length `dim`),
/// skipping target `skip(i)`. Candidates come from the Gram matrix |p|² + |t|² - 2 p·t in
/// f32 (one sgemm per block of points); every target within the f32 error of the best is
/// then measured exactly in f64, so an exact copy is at distance 0.
fn nearest(points: &[&[f32]], targets: &[&[f32]], dim: usize, skip: impl Fn(usize) -> Option<usize> + Sync) -> Vec<f64> {
    let t_flat: Vec<f32> = targets.iter().flat_map(|t| t.iter().copied()).collect();
    let t_norm: Vec<f64> = targets.iter().map(|t| squared_norm(t)).collect();
    let n = targets.len();
    points
        .par_chunks(BLOCK)
        .enumerate()
        .flat_map_iter(|(b, block)| {
            let p_flat: Vec<f32> = block.iter().flat_map(|p| p.iter().copied()).collect();
            let mut gram = vec![0f32; block.len() * n];
            // SAFETY: the slices hold block.len() x dim, n x dim and block.len() x n floats.
            unsafe {
                matrixmultiply::sgemm(
                    block.len(), dim, n, 1.0,
                    p_flat.as_ptr(), dim as isize, 1,
                    t_flat.as_ptr(), 1, dim as isize,
                    0.0, gram.as_mut_ptr(), n as isize, 1,
                );
            }
            let (targets, t_norm, skip) = (&targets, &t_norm, &skip);
            block.iter().enumerate().map(move |(r, p)| {
                let own = skip(b * BLOCK + r);
                let p_norm = squared_norm(p);
                let approx = |j: usize| p_norm + t_norm[j] - 2.0 * f64::from(gram[r * n + j]);
                let others = || (0..n).filter(move |&j| Some(j) != own);
                let best = others().map(approx).fold(f64::INFINITY, f64::min);
                others()
                    .filter(|&j| approx(j) <= best + 1e-4 * (p_norm + t_norm[j]) + 1e-12)
                    .map(|j| squared_distance(p, targets[j]))
                    .fold(f64::INFINITY, f64::min)
                    .sqrt()
            }).collect::<Vec<f64>>()
        })
        .collect()
}

/// Distance from each sample to its nearest target.
pub fn nearest_target(samples: &[&[f32]], targets: &[&[f32]], dim: usize) -> Vec<f64> {
    nearest(samples, targets, dim, |_| None)
}

/// Distance from each of the targets `chosen` (indices into `targets`) to its nearest other
/// target (infinite for a single target).
pub fn target_spacing(chosen: &[usize], targets: &[&[f32]], dim: usize) -> Vec<f64> {
    let points: Vec<&[f32]> = chosen.iter().map(|&i| targets[i]).collect();
    nearest(&points, targets, dim, |k| Some(chosen[k]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_copy_is_at_distance_zero_and_others_at_their_euclidean_distance() {
        let targets: Vec<Vec<f32>> = vec![vec![0.0, 0.0, 0.0], vec![3.0, 4.0, 0.0], vec![10.0, 0.0, 0.0]];
        let t: Vec<&[f32]> = targets.iter().map(Vec::as_slice).collect();
        let samples: Vec<Vec<f32>> = vec![targets[1].clone(), vec![0.0, 0.0, 2.0], vec![9.0, 0.0, 0.0]];
        let s: Vec<&[f32]> = samples.iter().map(Vec::as_slice).collect();
        assert_eq!(nearest_target(&s, &t, 3), vec![0.0, 2.0, 1.0]);
        // Spacing skips the target itself: 0 -> (3,4,0) is 5; (3,4,0) -> 0 is 5; (10,0,0) -> (3,4,0) is sqrt(65).
        assert_eq!(target_spacing(&[0, 1, 2], &t, 3), vec![5.0, 5.0, 65f64.sqrt()]);
        assert_eq!(target_spacing(&[2], &t, 3), vec![65f64.sqrt()]);
        assert_eq!(target_spacing(&[0], &t[..1], 3), vec![f64::INFINITY]);
    }

    #[test]
    fn brute_force_agrees_on_random_sets() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut set = |n: usize| -> Vec<Vec<f32>> { (0..n).map(|_| (0..5).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect() };
        // More samples than one block of the Gram matrix, some of them exact copies.
        let targets = set(300);
        let mut samples = set(150);
        samples[3] = targets[17].clone();
        samples[140] = targets[299].clone();
        let t: Vec<&[f32]> = targets.iter().map(Vec::as_slice).collect();
        let s: Vec<&[f32]> = samples.iter().map(Vec::as_slice).collect();
        let found = nearest_target(&s, &t, 5);
        assert_eq!((found[3], found[140]), (0.0, 0.0));
        for (d, sample) in found.iter().zip(&samples) {
            let best = targets.iter().map(|t| squared_distance(sample, t).sqrt()).fold(f64::INFINITY, f64::min);
            assert_eq!(*d, best);
            assert!(targets.iter().any(|t| squared_distance(sample, t).sqrt() == *d));
        }
    }
}
