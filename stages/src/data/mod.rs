//! Datasets of the base tasks (docs/science.md 1.4): UCI WDBC (shipped in the crate), MNIST and
//! Fashion-MNIST (IDX files read from a data directory), and the Gaussian toy set.
//!
//! Every dataset is preprocessed and split exactly once here, with a seeded shuffle, into
//! train / val / test [`Split`]s of row-major f32 features and integer labels.

pub mod idx;
pub mod mnist;
pub mod toy;
pub mod uci;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Default seed of the train/val/test split (the code's `random_state=42`; Rust cannot
/// reproduce sklearn's shuffle, so only the sizes match).
pub const DEFAULT_SPLIT_SEED: u64 = 42;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: file not found (expected sha256 {expected_sha256}); `wfpipe data fetch` downloads MNIST and Fashion-MNIST into the data folder")]
    Missing { path: PathBuf, expected_sha256: &'static str },
    #[error("{path}: sha256 mismatch: expected {expected_sha256}, found {found_sha256}")]
    Corrupt { path: PathBuf, expected_sha256: &'static str, found_sha256: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// The base tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetName {
    UciWdbc,
    Mnist,
    FashionMnist,
}

crate::words!(DatasetName, "dataset", { UciWdbc = "uci-wdbc", Mnist = "mnist", FashionMnist = "fashion-mnist" });

impl DatasetName {
    /// The words of a `dataset` parameter that may name no dataset: "none", then [`Self::NAMES`].
    pub const OR_NONE: &'static [&'static str] = &["none", "uci-wdbc", "mnist", "fashion-mnist"];

    /// Input dimension `n_0` an MLP for this dataset must have.
    pub fn inputs(self) -> usize {
        match self {
            DatasetName::UciWdbc => uci::FEATURES,
            DatasetName::Mnist | DatasetName::FashionMnist => mnist::PIXELS,
        }
    }

    /// Number of classes `n_L`.
    pub fn classes(self) -> usize {
        match self {
            DatasetName::UciWdbc => uci::CLASSES,
            DatasetName::Mnist | DatasetName::FashionMnist => mnist::CLASSES,
        }
    }
}

/// The rows a set of networks was trained on: the train split of `dataset` under
/// `split_seed`. Weight sets carry it from the collection on (through alignment,
/// canonicalization, the flow and its samples), so a later stage takes its training rows
/// and its test rows from the split the networks actually saw instead of a seed of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TrainingSplit {
    pub dataset: DatasetName,
    pub split_seed: u64,
}

impl TrainingSplit {
    /// Whether the test rows of `dataset` split under `seed` are unseen by these networks.
    /// MNIST and Fashion-MNIST train on their official training files whatever the seed
    /// (the seed only divides the official test file into val and test); UCI WDBC splits
    /// one table, so another seed moves training rows into the test split.
    pub fn keeps_unseen(&self, dataset: DatasetName, seed: u64) -> bool {
        self.dataset != dataset || self.split_seed == seed || dataset != DatasetName::UciWdbc
    }

    /// Refuses to measure networks on a split of `dataset` under `seed` that holds rows
    /// they were trained on (their own training rows may be measured: `split = train`).
    pub fn refuse_seen(this: Option<Self>, dataset: DatasetName, split: SplitName, seed: u64) -> Result<(), String> {
        match this {
            Some(t) if split != SplitName::Train && !t.keeps_unseen(dataset, seed) => Err(format!(
                "these networks were trained on {t}: the {dataset} {} split under split_seed {seed} holds rows they were trained on; set `split_seed = {}`",
                split.name(),
                t.split_seed
            )),
            _ => Ok(()),
        }
    }

    /// The seed whose train split `task`'s rows should come from when they adapt these
    /// networks (guidance): the recorded one for the networks' own task; another task was
    /// never seen, so its usual split.
    pub fn seed_for(this: Option<Self>, task: DatasetName) -> u64 {
        match this {
            Some(t) if t.dataset == task => t.split_seed,
            _ => DEFAULT_SPLIT_SEED,
        }
    }
}

/// Written as `uci-wdbc/42` (weight-set metadata, flow files).
impl fmt::Display for TrainingSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dataset, self.split_seed)
    }
}

impl FromStr for TrainingSplit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (dataset, seed) = s.rsplit_once('/').ok_or_else(|| format!("`{s}` is not `dataset/split_seed`"))?;
        let split_seed = seed.parse().map_err(|_| format!("`{seed}` in `{s}` is not a split seed"))?;
        Ok(TrainingSplit { dataset: dataset.parse()?, split_seed })
    }
}

impl From<TrainingSplit> for String {
    fn from(t: TrainingSplit) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for TrainingSplit {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitName {
    Train,
    Val,
    Test,
}

crate::words!(SplitName, "split", { Train = "train", Val = "val", Test = "test" });

/// Rows of one split: `x` is `[len × features]` row-major, `y` the class ids.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Split {
    pub features: usize,
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.features..(i + 1) * self.features]
    }

    /// The rows at `indices`, in that order.
    pub fn gather(&self, indices: &[usize]) -> Split {
        let mut x = Vec::with_capacity(indices.len() * self.features);
        for &i in indices {
            x.extend_from_slice(self.row(i));
        }
        Split { features: self.features, x, y: indices.iter().map(|&i| self.y[i]).collect() }
    }
}

/// A preprocessed, split dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: DatasetName,
    pub classes: usize,
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

impl Dataset {
    pub fn split(&self, which: SplitName) -> &Split {
        match which {
            SplitName::Train => &self.train,
            SplitName::Val => &self.val,
            SplitName::Test => &self.test,
        }
    }

    pub fn inputs(&self) -> usize {
        self.train.features
    }
}

/// Load, preprocess and split a dataset (docs/science.md 1.4). `data_dir` holds `mnist/` and
/// `fashion-mnist/`; UCI WDBC is built in.
pub fn load(name: DatasetName, data_dir: &Path, split_seed: u64) -> Result<Dataset, DataError> {
    match name {
        DatasetName::UciWdbc => Ok(uci::load(split_seed)),
        DatasetName::Mnist | DatasetName::FashionMnist => mnist::load(name, &data_dir.join(folder(name).expect("an IDX dataset")), split_seed),
    }
}

/// The folder of an IDX dataset under the data folder (`None`: built in).
pub fn folder(name: DatasetName) -> Option<&'static str> {
    match name {
        DatasetName::Mnist => Some("mnist"),
        DatasetName::FashionMnist => Some("fashion-mnist"),
        DatasetName::UciWdbc => None,
    }
}
