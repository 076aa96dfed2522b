//! The manifest of a cache entry: what was computed, from what, and the digest of every
//! output file. It is the last file written; an entry without one is not a result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wfpipe_stages::kind::{Params, Value};

pub const FORMAT: &str = "wfpipe-entry-v1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// Path relative to the entry's `out/` folder, `/`-separated.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub key: String,
    pub kind: String,
    pub version: u32,
    /// The instance name and pipeline that computed it first (names are not in the key).
    pub instance: String,
    pub pipeline: String,
    pub params: Params,
    pub axes: BTreeMap<String, Value>,
    pub seed: u64,
    /// Reference parameter -> upstream keys.
    pub inputs: BTreeMap<String, Vec<String>>,
    /// Reference parameter -> upstream instance names (for explanations).
    pub input_instances: BTreeMap<String, Vec<String>>,
    pub files: BTreeMap<String, Vec<(String, String)>>,
    /// See `StageKind::builtin_data_digest`.
    #[serde(default)]
    pub data_digest: Option<String>,
    pub outputs: Vec<FileRecord>,
    pub tables: Vec<String>,
    pub metrics: BTreeMap<String, f64>,
    pub started_unix: f64,
    pub duration_s: f64,
    pub backend: String,
    pub threads: usize,
    pub host: String,
    pub wfpipe_version: String,
}
