//! A set of MLP weight vectors in the flat layout (docs/science.md section 0), and its on-disk
//! form: one safetensors file.
//!
//! File format `wfpipe-weights-v1`:
//! - tensor `weights`, f32 `[count, P]`, one network per row in the flat layout;
//! - optional i64 tensors `[count]` (`run`, `epoch`, `step`, ...), one value per network;
//! - metadata `format = "wfpipe-weights-v1"`, `layout` (JSON list such as `[784,10,10]`),
//!   `aligned` and `canonical` (`"true"`/`"false"`), and, where the networks come from a
//!   task, `trained_on` (`"uci-wdbc/42"`: the dataset and the seed of its train split).
//!
//! A PyTorch user loads it with `safetensors.torch.load_file(path)["weights"]`.
//!
//! The header is written here rather than by `safetensors::serialize`, whose metadata map is
//! a `HashMap`: its iteration order changes between processes, and identical inputs must give
//! byte-identical files. Reading goes through the `safetensors` crate, which also checks
//! that what we write is valid.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::data::TrainingSplit;
use crate::layout::Layout;

/// The value of the `format` metadata entry.
pub const FORMAT: &str = "wfpipe-weights-v1";
/// The metadata entry naming the rows the networks were trained on.
const TRAINED_ON: &str = "trained_on";
/// The name of the weight tensor.
pub const WEIGHTS_TENSOR: &str = "weights";
/// The conventional file name of a weight set in a stage's output folder.
pub const FILE_NAME: &str = "weights.safetensors";

/// Everything that can go wrong building, reading or writing a weight set.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a wfpipe weight file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("weight set is empty (no networks)")]
    Empty,
    #[error("weight data holds {len} values, which is not a multiple of P = {params} for layout {layout}")]
    Ragged { layout: Layout, params: usize, len: usize },
    #[error("layout mismatch: expected {expected} (P = {expected_params}), found {found} (P = {found_params})")]
    LayoutMismatch { expected: Layout, expected_params: usize, found: Layout, found_params: usize },
    #[error("network {network} has a non-finite weight ({value}) at flat index {index}")]
    NonFinite { network: usize, index: usize, value: f32 },
    #[error("column `{name}` has {len} values for {count} networks")]
    ColumnLength { name: String, len: usize, count: usize },
    #[error("column name `{0}` is reserved for the weight tensor")]
    ReservedColumn(String),
    #[error("network index {index} is out of range for a set of {count}")]
    IndexOutOfRange { index: usize, count: usize },
}

/// `count` networks of one MLP layout, stored row by row in the flat layout.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSet {
    pub layout: Layout,
    /// Number of networks (rows).
    pub count: usize,
    /// `[count × P]`, row-major.
    pub data: Vec<f32>,
    /// The networks were permutation-aligned to a common reference (docs/science.md section 3).
    pub is_aligned: bool,
    /// The networks were canonicalized (docs/science.md section 4).
    pub is_canonical: bool,
    /// Integer columns with one value per network (`run`, `epoch`, `step`, ...).
    pub columns: BTreeMap<String, Vec<i64>>,
    /// The rows the networks (or, for flow samples, the flow's targets) were trained on;
    /// `None` for sets without a task (the toy set) and files written before it was kept.
    pub trained_on: Option<TrainingSplit>,
}

impl WeightSet {
    /// A set of raw (unaligned, non-canonical) networks. Rejects empty, ragged and
    /// non-finite data.
    pub fn new(layout: Layout, data: Vec<f32>) -> Result<Self, WeightsError> {
        let params = layout.num_params();
        if data.is_empty() {
            return Err(WeightsError::Empty);
        }
        if data.len() % params != 0 {
            return Err(WeightsError::Ragged { layout, params, len: data.len() });
        }
        check_finite(&data, params)?;
        let count = data.len() / params;
        Ok(WeightSet { layout, count, data, is_aligned: false, is_canonical: false, columns: BTreeMap::new(), trained_on: None })
    }

    /// Build from separate rows (each of length P).
    pub fn from_rows<'a>(layout: Layout, rows: impl IntoIterator<Item = &'a [f32]>) -> Result<Self, WeightsError> {
        let params = layout.num_params();
        let mut data = Vec::new();
        for row in rows {
            if row.len() != params {
                return Err(WeightsError::Ragged { layout, params, len: row.len() });
            }
            data.extend_from_slice(row);
        }
        Self::new(layout, data)
    }

    /// Attach an integer column with one value per network.
    pub fn with_column(mut self, name: &str, values: Vec<i64>) -> Result<Self, WeightsError> {
        self.set_column(name, values)?;
        Ok(self)
    }

    pub fn set_column(&mut self, name: &str, values: Vec<i64>) -> Result<(), WeightsError> {
        if name == WEIGHTS_TENSOR {
            return Err(WeightsError::ReservedColumn(name.to_owned()));
        }
        if values.len() != self.count {
            return Err(WeightsError::ColumnLength { name: name.to_owned(), len: values.len(), count: self.count });
        }
        self.columns.insert(name.to_owned(), values);
        Ok(())
    }

    pub fn column(&self, name: &str) -> Option<&[i64]> {
        self.columns.get(name).map(Vec::as_slice)
    }

    /// `P`, the length of one network.
    pub fn params(&self) -> usize {
        self.layout.num_params()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let p = self.params();
        &self.data[i * p..(i + 1) * p]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        let p = self.params();
        &mut self.data[i * p..(i + 1) * p]
    }

    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.params())
    }

    pub fn rows_mut(&mut self) -> std::slice::ChunksExactMut<'_, f32> {
        let p = self.params();
        self.data.chunks_exact_mut(p)
    }

    /// Error unless the set has exactly this layout.
    pub fn expect_layout(&self, expected: &Layout) -> Result<(), WeightsError> {
        if &self.layout == expected {
            Ok(())
        } else {
            Err(WeightsError::LayoutMismatch {
                expected: expected.clone(),
                expected_params: expected.num_params(),
                found: self.layout.clone(),
                found_params: self.layout.num_params(),
            })
        }
    }

    /// Error unless every weight is finite (after an in-place transformation, say).
    pub fn check_finite(&self) -> Result<(), WeightsError> {
        check_finite(&self.data, self.params())
    }

    /// The networks at `indices`, in that order, with their column values and flags.
    pub fn select(&self, indices: &[usize]) -> Result<WeightSet, WeightsError> {
        if indices.is_empty() {
            return Err(WeightsError::Empty);
        }
        let mut data = Vec::with_capacity(indices.len() * self.params());
        for &i in indices {
            if i >= self.count {
                return Err(WeightsError::IndexOutOfRange { index: i, count: self.count });
            }
            data.extend_from_slice(self.row(i));
        }
        let columns = self
            .columns
            .iter()
            .map(|(name, values)| (name.clone(), indices.iter().map(|&i| values[i]).collect()))
            .collect();
        Ok(WeightSet {
            layout: self.layout.clone(),
            count: indices.len(),
            data,
            is_aligned: self.is_aligned,
            is_canonical: self.is_canonical,
            columns,
            trained_on: self.trained_on,
        })
    }

    /// The safetensors bytes of this set. Identical sets give identical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WeightsError> {
        self.check_writable()?;
        let mut out = Vec::with_capacity(64 + self.data.len() * 4);
        self.encode_into(&mut out).expect("writing to a Vec cannot fail");
        Ok(out)
    }

    /// Check the set can be written: non-empty, consistent and finite.
    fn check_writable(&self) -> Result<(), WeightsError> {
        if self.count == 0 || self.data.is_empty() {
            return Err(WeightsError::Empty);
        }
        let params = self.params();
        if self.data.len() != self.count * params {
            return Err(WeightsError::Ragged { layout: self.layout.clone(), params, len: self.data.len() });
        }
        check_finite(&self.data, params)?;
        for (name, values) in &self.columns {
            if values.len() != self.count {
                return Err(WeightsError::ColumnLength { name: name.clone(), len: values.len(), count: self.count });
            }
        }
        Ok(())
    }

    fn encode_into(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut tensors: Vec<(String, TensorRef<'_>)> = self
            .columns
            .iter()
            .map(|(name, values)| (name.clone(), TensorRef::I64 { shape: vec![values.len()], values }))
            .collect();
        tensors.push((WEIGHTS_TENSOR.to_owned(), TensorRef::F32 { shape: vec![self.count, self.params()], values: &self.data }));
        encode_safetensors(tensors, &self.metadata(), out)
    }

    /// The metadata entries, sorted by key.
    fn metadata(&self) -> BTreeMap<String, String> {
        let mut meta = BTreeMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("layout".to_owned(), layout_json(&self.layout)),
            ("aligned".to_owned(), self.is_aligned.to_string()),
            ("canonical".to_owned(), self.is_canonical.to_string()),
        ]);
        // Absent rather than empty, so a set without a task keeps the bytes it always had.
        if let Some(split) = self.trained_on {
            meta.insert(TRAINED_ON.to_owned(), split.to_string());
        }
        meta
    }

    /// Parse safetensors bytes; `path` only names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, WeightsError> {
        let format_err = |reason: String| WeightsError::Format { path: path.to_owned(), reason };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
        let info = meta.metadata().as_ref().ok_or_else(|| format_err("no metadata".into()))?;
        let get = |key: &str| info.get(key).ok_or_else(|| format_err(format!("metadata `{key}` is missing")));

        let format = get("format")?;
        if format != FORMAT {
            return Err(format_err(format!("metadata format is `{format}`, expected `{FORMAT}`")));
        }
        let layout = parse_layout(get("layout")?).map_err(format_err)?;
        let is_aligned = parse_bool("aligned", get("aligned")?).map_err(format_err)?;
        let is_canonical = parse_bool("canonical", get("canonical")?).map_err(format_err)?;
        let trained_on = info.get(TRAINED_ON).map(|s| s.parse::<TrainingSplit>()).transpose().map_err(format_err)?;

        let weights = tensors
            .tensor(WEIGHTS_TENSOR)
            .map_err(|_| format_err(format!("no `{WEIGHTS_TENSOR}` tensor")))?;
        if weights.dtype() != Dtype::F32 {
            return Err(format_err(format!("`{WEIGHTS_TENSOR}` is {:?}, expected F32", weights.dtype())));
        }
        let params = layout.num_params();
        let (count, found_params) = match weights.shape() {
            [count, p] => (*count, *p),
            other => return Err(format_err(format!("`{WEIGHTS_TENSOR}` has shape {other:?}, expected [count, P]"))),
        };
        if found_params != params {
            return Err(format_err(format!(
                "`{WEIGHTS_TENSOR}` rows have {found_params} values but layout {layout} has P = {params}"
            )));
        }
        if count == 0 {
            return Err(WeightsError::Empty);
        }
        let data: Vec<f32> = weights
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        check_finite(&data, params)?;

        let mut columns = BTreeMap::new();
        for (name, view) in tensors.tensors() {
            if name == WEIGHTS_TENSOR {
                continue;
            }
            if view.dtype() != Dtype::I64 || view.shape() != [count] {
                return Err(format_err(format!(
                    "column `{name}` is {:?} {:?}, expected I64 [{count}]",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values = view
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunks_exact(8) yields 8 bytes")))
                .collect();
            columns.insert(name, values);
        }
        Ok(WeightSet { layout, count, data, is_aligned, is_canonical, columns, trained_on })
    }

    pub fn read(path: &Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_owned(), source })?;
        Self::from_bytes(&bytes, path)
    }

    /// Write atomically (temporary file + rename) so a killed run leaves no torn file.
    pub fn write(&self, path: &Path) -> Result<(), WeightsError> {
        self.check_writable()?;
        write_atomic(path, |w| self.encode_into(w))
    }
}

impl fmt::Display for WeightSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} networks of layout {}", self.count, self.layout)?;
        if self.is_aligned {
            write!(f, ", aligned")?;
        }
        if self.is_canonical {
            write!(f, ", canonical")?;
        }
        Ok(())
    }
}

/// A borrowed tensor to be written.
pub enum TensorRef<'a> {
    F32 { shape: Vec<usize>, values: &'a [f32] },
    I64 { shape: Vec<usize>, values: &'a [i64] },
}

impl TensorRef<'_> {
    fn dtype(&self) -> &'static str {
        match self {
            TensorRef::F32 { .. } => "F32",
            TensorRef::I64 { .. } => "I64",
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            TensorRef::F32 { shape, .. } | TensorRef::I64 { shape, .. } => shape,
        }
    }

    fn byte_len(&self) -> usize {
        match self {
            TensorRef::F32 { values, .. } => values.len() * 4,
            TensorRef::I64 { values, .. } => values.len() * 8,
        }
    }

    fn alignment(&self) -> usize {
        match self {
            TensorRef::F32 { .. } => 4,
            TensorRef::I64 { .. } => 8,
        }
    }

    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        // Convert in blocks: one write call per value would dominate for large sets.
        let mut block = Vec::with_capacity(1 << 16);
        match self {
            TensorRef::F32 { values, .. } => {
                for chunk in values.chunks(1 << 14) {
                    block.clear();
                    chunk.iter().for_each(|v| block.extend_from_slice(&v.to_le_bytes()));
                    out.write_all(&block)?;
                }
            }
            TensorRef::I64 { values, .. } => {
                for chunk in values.chunks(1 << 13) {
                    block.clear();
                    chunk.iter().for_each(|v| block.extend_from_slice(&v.to_le_bytes()));
                    out.write_all(&block)?;
                }
            }
        }
        Ok(())
    }
}

/// Encode tensors and metadata as a safetensors file with a deterministic header: keys
/// sorted, tensors stored by descending alignment then name (so each starts at an offset
/// aligned to its element size; the header is padded to 8 bytes). Identical inputs give
/// identical bytes.
pub fn encode_safetensors(
    mut tensors: Vec<(String, TensorRef<'_>)>,
    metadata: &BTreeMap<String, String>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    tensors.sort_by(|(a_name, a), (b_name, b)| b.alignment().cmp(&a.alignment()).then(a_name.cmp(b_name)));
    let mut header: BTreeMap<String, HeaderEntry> = BTreeMap::new();
    let mut offset = 0usize;
    for (name, t) in &tensors {
        header.insert(name.clone(), HeaderEntry::tensor(t.dtype(), t.shape().to_vec(), offset, offset + t.byte_len()));
        offset += t.byte_len();
    }
    header.insert("__metadata__".to_owned(), HeaderEntry::Metadata(metadata.clone()));
    // BTreeMaps and a struct: the key order is fixed whatever serde_json features the build
    // unifies (`preserve_order` would otherwise keep insertion order).
    let mut header_bytes = serde_json::to_vec(&header).expect("a map of strings and numbers always serializes");
    header_bytes.resize(header_bytes.len().next_multiple_of(8), b' ');
    out.write_all(&(header_bytes.len() as u64).to_le_bytes())?;
    out.write_all(&header_bytes)?;
    for (_, t) in &tensors {
        t.write_to(out)?;
    }
    Ok(())
}

/// Write a file atomically (temporary file + rename) so a killed run leaves no torn file.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>) -> Result<(), WeightsError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |source| WeightsError::Io { path: path.to_owned(), source };
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    fill(&mut writer).map_err(io)?;
    writer.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn check_finite(data: &[f32], params: usize) -> Result<(), WeightsError> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(pos) => Err(WeightsError::NonFinite { network: pos / params, index: pos % params, value: data[pos] }),
    }
}

/// One entry of the safetensors JSON header.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum HeaderEntry {
    Metadata(BTreeMap<String, String>),
    Tensor { dtype: &'static str, shape: Vec<usize>, data_offsets: [usize; 2] },
}

impl HeaderEntry {
    fn tensor(dtype: &'static str, shape: Vec<usize>, start: usize, end: usize) -> Self {
        HeaderEntry::Tensor { dtype, shape, data_offsets: [start, end] }
    }
}

/// `[784,10,10]`.
pub fn layout_json(layout: &Layout) -> String {
    serde_json::to_string(layout.sizes()).expect("a list of integers always serializes")
}

fn parse_layout(text: &str) -> Result<Layout, String> {
    let sizes: Vec<usize> =
        serde_json::from_str(text).map_err(|e| format!("metadata layout `{text}` is not a JSON list of sizes: {e}"))?;
    Layout::new(sizes).map_err(|e| format!("metadata layout: {e}"))
}

fn parse_bool(key: &str, text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("metadata `{key}` is `{other}`, expected `true` or `false`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_set() -> WeightSet {
        let layout = Layout(vec![3, 2, 2]);
        let p = layout.num_params();
        let data: Vec<f32> = (0..3 * p).map(|i| (i as f32 * 0.37).sin()).collect();
        WeightSet::new(layout, data)
            .unwrap()
            .with_column("run", vec![0, 0, 1])
            .unwrap()
            .with_column("epoch", vec![5, 6, 5])
            .unwrap()
    }

    #[test]
    fn the_training_split_travels_with_the_set_and_is_absent_when_unknown() {
        let set = small_set();
        let bytes = set.to_bytes().unwrap();
        assert_eq!(WeightSet::from_bytes(&bytes, Path::new("x")).unwrap().trained_on, None);
        assert!(!String::from_utf8_lossy(&bytes).contains("trained_on"), "no entry for a set without a task");
        let mut tagged = set.clone();
        tagged.trained_on = Some(TrainingSplit { dataset: crate::data::DatasetName::UciWdbc, split_seed: 7 });
        let back = WeightSet::from_bytes(&tagged.to_bytes().unwrap(), Path::new("x")).unwrap();
        assert_eq!(back.trained_on, tagged.trained_on);
        assert_eq!(back.select(&[0]).unwrap().trained_on, tagged.trained_on);
        assert_eq!("uci-wdbc/7".parse::<TrainingSplit>(), Ok(tagged.trained_on.unwrap()));
        assert!("uci-wdbc".parse::<TrainingSplit>().is_err());
    }

    #[test]
    fn round_trips_through_safetensors_bytes() {
        let mut set = small_set();
        set.is_aligned = true;
        let bytes = set.to_bytes().unwrap();
        let back = WeightSet::from_bytes(&bytes, Path::new("mem")).unwrap();
        assert_eq!(back, set);
        // The safetensors crate sees the same tensors and metadata.
        let parsed = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(parsed.tensor("weights").unwrap().shape(), &[3, set.params()]);
        assert_eq!(parsed.tensor("run").unwrap().dtype(), Dtype::I64);
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let info = meta.metadata().as_ref().unwrap();
        assert_eq!(info["layout"], "[3,2,2]");
        assert_eq!(info["format"], FORMAT);
        assert_eq!(info["aligned"], "true");
        assert_eq!(info["canonical"], "false");
    }

    #[test]
    fn identical_sets_give_identical_bytes() {
        let a = small_set().to_bytes().unwrap();
        let b = small_set().to_bytes().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn bad_input_gives_clear_errors() {
        let layout = Layout(vec![3, 2, 2]);
        assert!(matches!(WeightSet::new(layout.clone(), vec![]), Err(WeightsError::Empty)));
        assert!(matches!(WeightSet::new(layout.clone(), vec![0.0; 7]), Err(WeightsError::Ragged { .. })));
        let mut data = vec![0.0; 2 * layout.num_params()];
        data[layout.num_params() + 4] = f32::NAN;
        let err = WeightSet::new(layout.clone(), data).unwrap_err();
        assert!(matches!(err, WeightsError::NonFinite { network: 1, index: 4, .. }), "{err}");
        let set = small_set();
        let err = set.expect_layout(&Layout(vec![784, 10, 10])).unwrap_err();
        assert!(err.to_string().contains("expected 784-10-10"), "{err}");
        assert!(matches!(set.select(&[3]), Err(WeightsError::IndexOutOfRange { index: 3, count: 3 })));
        assert!(matches!(set.clone().with_column("step", vec![1]), Err(WeightsError::ColumnLength { .. })));
        let err = WeightSet::from_bytes(b"not a safetensors file", Path::new("x.safetensors")).unwrap_err();
        assert!(err.to_string().starts_with("x.safetensors: not a wfpipe weight file"), "{err}");
    }

    #[test]
    fn non_finite_weights_in_a_file_are_rejected() {
        let set = small_set();
        let mut bytes = set.to_bytes().unwrap();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::INFINITY.to_le_bytes());
        let err = WeightSet::from_bytes(&bytes, Path::new("w")).unwrap_err();
        assert!(matches!(err, WeightsError::NonFinite { network: 2, .. }), "{err}");
    }

    #[test]
    fn select_keeps_columns_and_flags() {
        let mut set = small_set();
        set.is_canonical = true;
        let sub = set.select(&[2, 0]).unwrap();
        assert_eq!(sub.count, 2);
        assert_eq!(sub.row(0), set.row(2));
        assert_eq!(sub.column("run"), Some(&[1, 0][..]));
        assert!(sub.is_canonical);
    }
}
