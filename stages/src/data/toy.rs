//! The Gaussian toy of docs/science.md 1.4: no base task; "weights" are vectors of the toy
//! layout 30-16-16-2 (P = 802), with `p0 = N(0, I)` and `p1 = N(1·𝟙, I)`.

use crate::layout::Layout;
use crate::rng::{self, Rng};

/// The layout that fixes the toy's graph.
pub fn layout() -> Layout {
    Layout(vec![30, 16, 16, 2])
}

/// An isotropic Gaussian `N(mean·𝟙, std²·I)` over flat vectors of a layout.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianToy {
    pub layout: Layout,
    pub mean: f32,
    pub std: f32,
}

impl GaussianToy {
    /// The source `p0 = N(0, I)`.
    pub fn source() -> Self {
        GaussianToy { layout: layout(), mean: 0.0, std: 1.0 }
    }

    /// The target `p1 = N(1·𝟙, I)`.
    pub fn target() -> Self {
        GaussianToy { layout: layout(), mean: 1.0, std: 1.0 }
    }

    /// `count` draws, `[count × P]` row-major.
    pub fn sample(&self, rng: &mut Rng, count: usize) -> Vec<f32> {
        let mut out = vec![0.0; count * self.layout.num_params()];
        rng::fill_normal(rng, &mut out, self.mean, self.std);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_the_requested_moments() {
        let toy = GaussianToy::target();
        let x = toy.sample(&mut rng::stream(1, "toy", 0), 200);
        assert_eq!(x.len(), 200 * 802);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}
