//! The product manifold of canonical networks (docs/science.md §4.2–4.3) in the flat layout.
//!
//! The main type is [`ProductGeometry`], built from a [`Layout`]: it says which flat
//! coordinates form which unit sphere (one per hidden neuron's incoming weights, one for the
//! whole last weight matrix) and which are Euclidean (all biases). Its operations run on
//! `[count, P]` row-major batches, one network per row, in parallel over rows.

use rayon::prelude::*;

use super::sphere;
use crate::layout::Layout;

/// One sphere point: `len` flat coordinates `start, start+stride, …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpherePoint {
    /// The weight block (0-based weight layer) this point belongs to; the geometric loss
    /// averages per block first.
    pub block: usize,
    pub start: usize,
    pub stride: usize,
    pub len: usize,
}

impl SpherePoint {
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).map(move |k| self.start + k * self.stride)
    }

    fn gather(&self, theta: &[f32]) -> Vec<f32> {
        self.indices().map(|i| theta[i]).collect()
    }

    fn scatter(&self, theta: &mut [f32], values: &[f32]) {
        for (i, v) in self.indices().zip(values) {
            theta[i] = *v;
        }
    }
}

/// `Π (S^{n_{l−1}−1})^{n_l} × S^{n_{L−1} n_L − 1} × R^{Σ n_l}` for one layout.
#[derive(Clone, Debug)]
pub struct ProductGeometry {
    layout: Layout,
    points: Vec<SpherePoint>,
}

impl ProductGeometry {
    pub fn new(layout: &Layout) -> Self {
        let n = layout.sizes();
        let depth = layout.num_layers();
        let mut points = Vec::new();
        for l in 1..depth {
            // Hidden neuron b of layer l: the strided column b of the [n_{l-1}, n_l] block.
            for b in 0..n[l] {
                points.push(SpherePoint {
                    block: l - 1,
                    start: layout.weight_offset(l) + b,
                    stride: n[l],
                    len: n[l - 1],
                });
            }
        }
        points.push(SpherePoint {
            block: depth - 1,
            start: layout.weight_offset(depth),
            stride: 1,
            len: n[depth - 1] * n[depth],
        });
        ProductGeometry { layout: layout.clone(), points }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn points(&self) -> &[SpherePoint] {
        &self.points
    }

    /// Number of weight blocks (= weight layers L).
    pub fn num_blocks(&self) -> usize {
        self.layout.num_layers()
    }

    /// The Euclidean (bias) coordinates.
    pub fn bias_range(&self) -> std::ops::Range<usize> {
        self.layout.num_weights()..self.layout.num_params()
    }

    fn dim(&self) -> usize {
        self.layout.num_params()
    }

    /// Geodesic interpolation per sphere point and linear on biases (docs/science.md §5.5):
    /// `x_t = exp_{x0}(t·log_{x0}(x1))`, `b_t = (1−t) b0 + t b1`. One `t` per row.
    pub fn interpolate(&self, x0: &[f32], x1: &[f32], t: &[f32]) -> Vec<f32> {
        let p = self.dim();
        let mut out = vec![0.0f32; x0.len()];
        out.par_chunks_mut(p)
            .zip(x0.par_chunks(p).zip(x1.par_chunks(p)))
            .zip(t.par_iter())
            .for_each(|((row, (a, b)), &t)| {
                for point in &self.points {
                    point.scatter(row, &sphere::geodesic(&point.gather(a), &point.gather(b), t));
                }
                for i in self.bias_range() {
                    row[i] = (1.0 - t) * a[i] + t * b[i];
                }
            });
        out
    }

    /// One manifold step `x ← exp_x(v)` per sphere point (geoopt formula, `v` not
    /// projected) and `b ← b + v_b` on biases.
    pub fn step(&self, x: &mut [f32], v: &[f32]) {
        let p = self.dim();
        x.par_chunks_mut(p).zip(v.par_chunks(p)).for_each(|(row, vel)| {
            for point in &self.points {
                let next = sphere::expmap(&point.gather(row), &point.gather(vel));
                point.scatter(row, &next);
            }
            for i in self.bias_range() {
                row[i] += vel[i];
            }
        });
    }

    /// `log_x(y)` per sphere point and `y − x` on biases.
    pub fn log(&self, x: &[f32], y: &[f32]) -> Vec<f32> {
        let p = self.dim();
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(p)
            .zip(x.par_chunks(p).zip(y.par_chunks(p)))
            .for_each(|(row, (a, b))| {
                for point in &self.points {
                    point.scatter(row, &sphere::logmap(&point.gather(a), &point.gather(b)));
                }
                for i in self.bias_range() {
                    row[i] = b[i] - a[i];
                }
            });
        out
    }

    /// Projects every sphere point back onto its sphere (biases unchanged).
    pub fn project(&self, x: &mut [f32]) {
        let p = self.dim();
        x.par_chunks_mut(p).for_each(|row| {
            for point in &self.points {
                let on = sphere::projx(&point.gather(row));
                point.scatter(row, &on);
            }
        });
    }

    /// The largest `|‖x_s‖ − 1|` over all sphere points of all rows.
    pub fn max_norm_error(&self, x: &[f32]) -> f32 {
        x.par_chunks(self.dim())
            .map(|row| {
                self.points
                    .iter()
                    .map(|pt| (sphere::norm(&pt.gather(row)) - 1.0).abs())
                    .fold(0.0f32, f32::max)
            })
            .reduce(|| 0.0, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::ResumableRng;

    #[test]
    fn spheres_and_biases_partition_the_flat_vector() {
        for sizes in [vec![30, 16, 16, 2], vec![784, 10, 10], vec![3, 2, 4]] {
            let layout = Layout(sizes.clone());
            let geo = ProductGeometry::new(&layout);
            let mut seen = vec![0u8; layout.num_params()];
            for pt in geo.points() {
                for i in pt.indices() {
                    seen[i] += 1;
                }
            }
            for i in geo.bias_range() {
                seen[i] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "{sizes:?}");
        }
        let uci = ProductGeometry::new(&Layout(vec![30, 16, 16, 2]));
        assert_eq!(uci.points().len(), 33);
        assert_eq!(uci.points().last().map(|p| p.len), Some(32));
        // hidden neuron 1 of layer 1 holds W_1[1, a] for every input a
        let l = uci.layout();
        let first: Vec<usize> = uci.points()[1].indices().collect();
        assert_eq!(first, (0..30).map(|a| l.weight_index(1, 1, a)).collect::<Vec<_>>());
    }

    #[test]
    fn interpolation_stays_on_the_spheres_batched() {
        let layout = Layout(vec![5, 4, 3, 2]);
        let geo = ProductGeometry::new(&layout);
        let mut rng = ResumableRng::seed_from(11);
        let p = layout.num_params();
        let mut x0 = rng.normal_vec(3 * p, 0.0, 1.0);
        let mut x1 = rng.normal_vec(3 * p, 0.0, 1.0);
        geo.project(&mut x0);
        geo.project(&mut x1);
        let xt = geo.interpolate(&x0, &x1, &[0.0, 0.3, 1.0]);
        assert!(geo.max_norm_error(&xt) < 1e-4);
        for i in 0..p {
            assert!((xt[i] - x0[i]).abs() < 1e-5);
            assert!((xt[2 * p + i] - x1[2 * p + i]).abs() < 2e-3);
        }
        let b = layout.num_weights();
        assert!((xt[p + b] - (0.7 * x0[p + b] + 0.3 * x1[p + b])).abs() < 1e-6);
    }
}
