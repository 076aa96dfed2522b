//! UCI Breast Cancer Wisconsin (Diagnostic), shipped in the crate (`stages/data/uci-wdbc/`).
//!
//! Preprocessing per docs/science.md 1.4: labels B→0, M→1 (the file's sklearn `target` is
//! 0 = malignant, 1 = benign, so label = 1 − target); every feature is standardized with
//! its mean and population std over **all 569 rows before splitting** [faithful]; then a
//! seeded shuffle splits 455 / 57 / 57 into train / val / test.

use rand::seq::SliceRandom;

use super::{Dataset, DatasetName, Split};
use crate::rng;

pub const FEATURES: usize = 30;
pub const CLASSES: usize = 2;
pub const ROWS: usize = 569;
pub const TRAIN: usize = 455;
pub const VAL: usize = 57;

const CSV: &str = include_str!("../../data/uci-wdbc/wdbc.csv");

/// The raw rows: features `[ROWS × FEATURES]` and labels (B→0, M→1).
pub fn raw() -> (Vec<f64>, Vec<u32>) {
    let mut x = Vec::with_capacity(ROWS * FEATURES);
    let mut y = Vec::with_capacity(ROWS);
    for (line_no, line) in CSV.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), FEATURES + 1, "embedded wdbc.csv line {} has {} fields", line_no + 1, fields.len());
        for f in &fields[..FEATURES] {
            x.push(f.trim().parse::<f64>().expect("embedded wdbc.csv holds numbers"));
        }
        let target: u32 = fields[FEATURES].trim().parse().expect("embedded wdbc.csv targets are 0 or 1");
        y.push(1 - target);
    }
    assert_eq!(y.len(), ROWS, "embedded wdbc.csv has {ROWS} rows");
    (x, y)
}

/// Standardize columns in place with the population std (ddof = 0).
fn standardize(x: &mut [f64], features: usize) {
    let rows = x.len() / features;
    for j in 0..features {
        let mean = (0..rows).map(|i| x[i * features + j]).sum::<f64>() / rows as f64;
        let var = (0..rows).map(|i| (x[i * features + j] - mean).powi(2)).sum::<f64>() / rows as f64;
        let std = var.sqrt();
        for i in 0..rows {
            x[i * features + j] = (x[i * features + j] - mean) / std;
        }
    }
}

/// The table's rows in split order: the first `TRAIN` are the train split, the next `VAL`
/// the val split, the rest the test split.
pub fn split_order(split_seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ROWS).collect();
    order.shuffle(&mut rng::stream(split_seed, "uci-wdbc split", 0));
    order
}

pub fn load(split_seed: u64) -> Dataset {
    let (mut x, y) = raw();
    standardize(&mut x, FEATURES);
    let all = Split { features: FEATURES, x: x.iter().map(|&v| v as f32).collect(), y };
    let order = split_order(split_seed);
    Dataset {
        name: DatasetName::UciWdbc,
        classes: CLASSES,
        train: all.gather(&order[..TRAIN]),
        val: all.gather(&order[TRAIN..TRAIN + VAL]),
        test: all.gather(&order[TRAIN + VAL..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_published_shape_and_class_counts() {
        let (x, y) = raw();
        assert_eq!(x.len(), ROWS * FEATURES);
        assert_eq!(x[0], 17.99); // UCI record 842302, malignant
        assert_eq!(y[0], 1);
        assert_eq!(y.iter().filter(|&&c| c == 1).count(), 212);
        assert_eq!(y.iter().filter(|&&c| c == 0).count(), 357);
    }

    #[test]
    fn splits_are_seeded_standardized_and_disjoint() {
        let a = load(42);
        assert_eq!((a.train.len(), a.val.len(), a.test.len()), (455, 57, 57));
        assert_eq!(a.train, load(42).train);
        assert_ne!(a.train, load(43).train);
        // Standardized over all rows: the column means over the union are ~0, stds ~1.
        let rows: Vec<&[f32]> = [&a.train, &a.val, &a.test].iter().flat_map(|s| (0..s.len()).map(|i| s.row(i))).collect();
        for j in [0, 17, 29] {
            let mean = rows.iter().map(|r| r[j] as f64).sum::<f64>() / ROWS as f64;
            let var = rows.iter().map(|r| (r[j] as f64 - mean).powi(2)).sum::<f64>() / ROWS as f64;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "column {j}: mean {mean}, var {var}");
        }
    }
}
