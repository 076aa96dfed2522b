//! The toy evaluation (docs/science.md 8.7, Fig. 7.1): there is no task, so each generated vector
//! is summarized by the mean (and spread) of its coordinates; a histogram of the per-sample
//! means is compared with the same statistic of p1 = N(1, I), which is N(1, 1/P)
//! (std ≈ 0.035 for P = 802). The average over coordinates of the across-sample std shows
//! directly whether a sampler reproduces the target's unit variance per coordinate.

use crate::stats::MeanStd;
use super::EvalError;

/// Mean and population std of one vector's coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleStats {
    pub coordinate_mean: f64,
    pub coordinate_std: f64,
}

/// Statistics of the whole set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToySummary {
    /// Mean and spread over samples of the per-sample coordinate means (the histogram).
    pub sample_means: MeanStd,
    /// Mean over samples of the within-sample coordinate std.
    pub mean_coordinate_std: f64,
    /// Mean over coordinates of the std across samples (1 for the target).
    pub mean_across_sample_std: f64,
}

pub fn sample_stats(vector: &[f32]) -> SampleStats {
    let s = MeanStd::of(vector.iter().map(|&v| v as f64)).unwrap_or(MeanStd { mean: 0.0, std: 0.0, count: 0 });
    SampleStats { coordinate_mean: s.mean, coordinate_std: s.std }
}

/// Per-sample statistics and the set summary of `count` vectors of length `p` (row-major).
pub fn toy_statistics(data: &[f32], p: usize) -> Result<(Vec<SampleStats>, ToySummary), EvalError> {
    if p == 0 {
        return Err(EvalError::ZeroSize { what: "the vector length" });
    }
    let per_sample: Vec<SampleStats> = data.chunks_exact(p).map(sample_stats).collect();
    let sample_means = MeanStd::of(per_sample.iter().map(|s| s.coordinate_mean)).ok_or(EvalError::NoNetworks)?;
    let count = per_sample.len() as f64;
    let mean_coordinate_std = per_sample.iter().map(|s| s.coordinate_std).sum::<f64>() / count;
    // Two passes over columns: means, then squared deviations.
    let mut col_mean = vec![0.0f64; p];
    for row in data.chunks_exact(p) {
        col_mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    col_mean.iter_mut().for_each(|m| *m /= count);
    let mut col_var = vec![0.0f64; p];
    for row in data.chunks_exact(p) {
        col_var.iter_mut().zip(row).zip(&col_mean).for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2));
    }
    let mean_across_sample_std = col_var.iter().map(|s| (s / count).sqrt()).sum::<f64>() / p as f64;
    Ok((per_sample, ToySummary { sample_means, mean_coordinate_std, mean_across_sample_std }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::GaussianToy;
    use crate::rng;

    #[test]
    fn target_draws_have_the_expected_statistics() {
        let toy = GaussianToy::target();
        let p = toy.layout.num_params();
        let data = toy.sample(&mut rng::stream(5, "test", 0), 2000);
        let (per_sample, s) = toy_statistics(&data, p).unwrap();
        assert_eq!(per_sample.len(), 2000);
        assert!((s.sample_means.mean - 1.0).abs() < 0.005, "{s:?}");
        // N(1, 1/802): std ≈ 0.0353.
        assert!((s.sample_means.std - (1.0 / p as f64).sqrt()).abs() < 0.003, "{s:?}");
        assert!((s.mean_coordinate_std - 1.0).abs() < 0.01 && (s.mean_across_sample_std - 1.0).abs() < 0.02, "{s:?}");
        // A collapsed set (every sample the same vector) has no spread across samples.
        let collapsed: Vec<f32> = data[..p].repeat(10);
        let (_, c) = toy_statistics(&collapsed, p).unwrap();
        assert!(c.sample_means.std < 1e-12 && c.mean_across_sample_std < 1e-6, "{c:?}");
        assert_eq!(toy_statistics(&[], p).unwrap_err(), EvalError::NoNetworks);
    }
}
