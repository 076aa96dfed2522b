//! Where the x0 and x1 batches come from (docs/science.md §5.2).
//!
//! The main type is [`BatchSource`]: either a finite set of rows served by a loader that
//! reshuffles every epoch, drops the last partial batch and cycles forever (the code's
//! `sample_from_loader`), or fresh Gaussian draws every batch. [`prior_set`] pre-draws the
//! faithful fixed source set, canonicalized for the sphere geometries.

use burn::backend::NdArray;
use serde::{Deserialize, Serialize};

use crate::geometry::canon::canonicalize;
use crate::layout::Layout;
use crate::noise::ResumableRng;
use crate::rows::{host_rows, rows_tensor};

/// A cycling, reshuffling loader over `count` rows; its position is part of checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderState {
    order: Vec<usize>,
    cursor: usize,
}

impl LoaderState {
    fn new(count: usize, rng: &mut ResumableRng) -> Self {
        LoaderState { order: rng.permutation(count), cursor: 0 }
    }

    /// The row indices of the next full batch (drop_last: a new epoch starts when fewer
    /// than `batch` rows remain).
    fn next(&mut self, batch: usize, rng: &mut ResumableRng) -> Vec<usize> {
        if self.cursor + batch > self.order.len() {
            self.order = rng.permutation(self.order.len());
            self.cursor = 0;
        }
        let out = self.order[self.cursor..self.cursor + batch].to_vec();
        self.cursor += batch;
        out
    }
}

/// Rows to draw batches from.
#[derive(Clone, Debug)]
pub enum BatchSource {
    /// A finite `[count, P]` set.
    Rows { rows: Vec<f32>, p: usize },
    /// Fresh `N(mean·𝟙, std²·I)` draws, canonicalized when `canonical`.
    Gaussian { layout: Layout, mean: f64, std: f64, canonical: bool },
}

impl BatchSource {
    pub fn count(&self) -> Option<usize> {
        match self {
            BatchSource::Rows { rows, p } => Some(rows.len() / p),
            BatchSource::Gaussian { .. } => None,
        }
    }

    /// A loader position for this source (None for fresh draws).
    pub fn loader(&self, rng: &mut ResumableRng) -> Option<LoaderState> {
        self.count().map(|count| LoaderState::new(count, rng))
    }

    /// The next `[batch, P]` batch.
    pub fn next_batch(&self, batch: usize, loader: Option<&mut LoaderState>, rng: &mut ResumableRng) -> Vec<f32> {
        match (self, loader) {
            (BatchSource::Rows { rows, p }, Some(loader)) => {
                let mut out = Vec::with_capacity(batch * p);
                for i in loader.next(batch, rng) {
                    out.extend_from_slice(&rows[i * p..(i + 1) * p]);
                }
                out
            }
            (BatchSource::Rows { .. }, None) => panic!("a finite source needs its loader state"),
            (BatchSource::Gaussian { layout, mean, std, canonical }, _) => {
                let draws = rng.normal_vec(batch * layout.num_params(), *mean, *std);
                if *canonical {
                    canonicalize_rows(&draws, layout)
                } else {
                    draws
                }
            }
        }
    }
}

/// `canon` of every row of a host `[count, P]` batch.
pub fn canonicalize_rows(rows: &[f32], layout: &Layout) -> Vec<f32> {
    let p = layout.num_params();
    let device = Default::default();
    host_rows(canonicalize(rows_tensor::<NdArray<f32>>(rows, p, &device), layout))
}

/// The fixed prior set: `count` draws of `N(0, std²·I_P)` on all coordinates (biases
/// included), canonicalized when `canonical` (docs/science.md §5.2, faithful).
pub fn prior_set(layout: &Layout, count: usize, std: f64, canonical: bool, rng: &mut ResumableRng) -> Vec<f32> {
    let draws = rng.normal_vec(count * layout.num_params(), 0.0, std);
    if canonical {
        canonicalize_rows(&draws, layout)
    } else {
        draws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_visits_every_row_once_per_epoch_and_drops_the_rest() {
        let source = BatchSource::Rows { rows: (0..10).map(|v| v as f32).collect(), p: 1 };
        let mut rng = ResumableRng::seed_from(2);
        let mut loader = source.loader(&mut rng);
        let mut seen: Vec<f32> = Vec::new();
        for _ in 0..3 {
            seen.extend(source.next_batch(3, loader.as_mut(), &mut rng));
        }
        seen.sort_by(f32::total_cmp);
        seen.dedup();
        assert_eq!(seen.len(), 9, "one epoch of 3 full batches, no repeats");
    }

    #[test]
    fn canonical_prior_first_layer_is_uniform_direction() {
        let layout = Layout(vec![3, 4, 2]);
        let mut rng = ResumableRng::seed_from(3);
        let rows = prior_set(&layout, 4000, 0.1, true, &mut rng);
        let p = layout.num_params();
        // mean of the first hidden neuron's direction is ~0 and its norm is 1
        let mut mean = [0.0f64; 3];
        for r in rows.chunks(p) {
            for (a, m) in mean.iter_mut().enumerate() {
                *m += r[layout.weight_index(1, 0, a)] as f64 / 4000.0;
            }
            let norm: f32 = (0..3).map(|a| r[layout.weight_index(1, 0, a)].powi(2)).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        assert!(mean.iter().all(|m| m.abs() < 0.05), "{mean:?}");
    }
}
