//! MNIST and Fashion-MNIST from IDX files (docs/science.md 1.4).
//!
//! - train: all 60,000 training images, shuffled per epoch by the trainer;
//! - the official 10,000 test images are split 50/50 with a seeded permutation into
//!   test (first 5,000) and val (last 5,000);
//! - pixels become `(v/255 − 0.1307)/0.3081`, flattened row-major to 784. Fashion-MNIST uses
//!   the MNIST constants too [faithful].

use std::path::Path;

use rand::seq::SliceRandom;

use super::idx::{self, IdxFile};
use super::{DataError, Dataset, DatasetName, Split};
use crate::rng;

pub const PIXELS: usize = 784;
pub const CLASSES: usize = 10;
pub const TEST: usize = 5_000;
const MEAN: f32 = 0.1307;
const STD: f32 = 0.3081;

/// The four files of a dataset folder, with the SHA-256 of their decompressed bytes
/// (`None` for a dataset that is not stored as IDX files).
pub fn files(name: DatasetName) -> Option<[IdxFile; 4]> {
    match name {
        DatasetName::Mnist => Some([
            IdxFile { name: "train-images-idx3-ubyte", sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db" },
            IdxFile { name: "train-labels-idx1-ubyte", sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5" },
            IdxFile { name: "t10k-images-idx3-ubyte", sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7" },
            IdxFile { name: "t10k-labels-idx1-ubyte", sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2" },
        ]),
        DatasetName::FashionMnist => Some([
            IdxFile { name: "train-images-idx3-ubyte", sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888" },
            IdxFile { name: "train-labels-idx1-ubyte", sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9" },
            IdxFile { name: "t10k-images-idx3-ubyte", sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b" },
            IdxFile { name: "t10k-labels-idx1-ubyte", sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34" },
        ]),
        DatasetName::UciWdbc => None,
    }
}

fn read_split(dir: &Path, images: IdxFile, labels: IdxFile) -> Result<Split, DataError> {
    let img = idx::read_checked(dir, images)?;
    let lab = idx::read_checked(dir, labels)?;
    let shape_err = |reason: String| DataError::Format { path: dir.join(images.name), reason };
    if img.dims.len() != 3 || img.dims[1] * img.dims[2] != PIXELS {
        return Err(shape_err(format!("images have dims {:?}, expected [n, 28, 28]", img.dims)));
    }
    if lab.dims != [img.dims[0]] {
        return Err(shape_err(format!("labels have dims {:?} for {} images", lab.dims, img.dims[0])));
    }
    if let Some(bad) = lab.data.iter().find(|&&c| c as usize >= CLASSES) {
        return Err(shape_err(format!("label {bad} is not a class id below {CLASSES}")));
    }
    let x = img.data.iter().map(|&v| (v as f32 / 255.0 - MEAN) / STD).collect();
    Ok(Split { features: PIXELS, x, y: lab.data.iter().map(|&c| c as u32).collect() })
}

pub fn load(name: DatasetName, dir: &Path, split_seed: u64) -> Result<Dataset, DataError> {
    let Some([train_images, train_labels, test_images, test_labels]) = files(name) else {
        return Err(DataError::Format { path: dir.to_owned(), reason: format!("{name} is not an IDX dataset") });
    };
    let train = read_split(dir, train_images, train_labels)?;
    let official_test = read_split(dir, test_images, test_labels)?;
    let mut order: Vec<usize> = (0..official_test.len()).collect();
    order.shuffle(&mut rng::stream(split_seed, "mnist test/val split", 0));
    let cut = TEST.min(order.len());
    Ok(Dataset {
        name,
        classes: CLASSES,
        train,
        test: official_test.gather(&order[..cut]),
        val: official_test.gather(&order[cut..]),
    })
}
