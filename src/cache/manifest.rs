//! The manifest of a cache entry: what was computed, from what, and the digest of every
//! output file. It is the last file written; an entry without one is not a result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::InstanceSpec;

/// The spec's fields stand at the top level (`spec::SpecFields`); fields added since are
/// optional, so entries written before them and wfpipes older than them still read.
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
    /// The instance name and pipeline that computed it first (names are not in the key).
    pub instance: String,
    pub pipeline: String,
    #[serde(flatten)]
    pub spec: InstanceSpec,
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

/// This machine's name, as manifests and claim marks record it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry published before the spec's later fields still reads, whole.
    #[test]
    fn a_manifest_without_the_later_fields_reads() {
        let text = r#"{
  "format": "wfpipe-entry-v1", "key": "3b17b11b7338e28f0fcbe23506a6aa9e", "kind": "collect", "version": 1,
  "instance": "c[lr=0.001]", "pipeline": "p",
  "params": {"lr": 0.001, "runs": 100, "weights": "upstream"}, "axes": {"lr": 0.001}, "seed": 7,
  "inputs": {"weights": ["abc"]}, "input_instances": {"weights": ["up"]}, "files": {},
  "data_digest": null,
  "outputs": [{"path": "a.csv", "size": 3, "blake3": "ff"}], "tables": ["a"], "metrics": {"loss": 0.5},
  "started_unix": 1.5, "duration_s": 2.0, "backend": "cpu", "threads": 1, "host": "h", "wfpipe_version": "0.1.0"
}"#;
        let m: Manifest = serde_json::from_str(text).unwrap();
        assert_eq!(m.spec.kind, "collect");
        assert_eq!(m.spec.inputs["weights"][0].instance, "up");
        assert_eq!(m.spec.params.0["lr"], wfpipe_stages::kind::Value::Float(0.001));
        assert_eq!(m.spec.params.0["runs"], wfpipe_stages::kind::Value::Int(100));
        assert_eq!(m.outputs[0].path, "a.csv");
        assert_eq!(m.metrics["loss"], 0.5);
        // The spec it records hashes to the key it is filed under, once the reference is unkeyed.
        let mut spec = m.spec.clone();
        spec.unkeyed.insert("weights".into());
        assert_eq!(spec.key(), m.key);
    }

    #[test]
    fn a_manifest_reads_back_what_it_wrote() {
        let m = Manifest {
            format: FORMAT.into(),
            key: "k".into(),
            instance: "i".into(),
            pipeline: "p".into(),
            spec: InstanceSpec { kind: "toy-data".into(), version: 2, seed: 3, ..InstanceSpec::default() },
            outputs: Vec::new(),
            tables: Vec::new(),
            metrics: BTreeMap::from([("m".to_owned(), 0.1 + 0.2)]),
            started_unix: 0.0,
            duration_s: 1.0,
            backend: "cpu".into(),
            threads: 2,
            host: "h".into(),
            wfpipe_version: "0".into(),
        };
        let back: Manifest = serde_json::from_slice(&serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        assert_eq!(back.spec, m.spec);
        assert_eq!(back.metrics, m.metrics);
    }
}
