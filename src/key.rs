//! Cache keys: blake3 of a canonical encoding of what determines an instance's output.
//!
//! | in the key                                    | not in the key                        |
//! |-----------------------------------------------|---------------------------------------|
//! | kind name and kind version                    | stage and instance names              |
//! | every parameter after defaults (typed)        | resources (cpus, gpus, memory, time)  |
//! | contents (blake3) of declared input files     | file paths                            |
//! | keys of the upstream instances, per parameter | backend, executor, host, pipeline     |
//! | the seed                                      | wfpipe's own version                  |
//! | built-in data the kind declares (reference values) |                                  |
//!
//! Renaming a stage, moving it to a GPU or to SLURM therefore reuses its cached result,
//! and identical stages in two pipelines share one entry.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use wfpipe_stages::kind::{Params, Value};

/// Domain separation: bump when the encoding below changes.
const ENCODING: &str = "wfpipe-key-v1";

pub struct KeyMaterial<'a> {
    pub kind: &'a str,
    pub version: u32,
    pub params: &'a Params,
    /// Parameters left out (references and file paths, represented by `inputs`/`files`).
    pub skip: &'a BTreeSet<&'a str>,
    pub files: &'a BTreeMap<String, Vec<(String, String)>>,
    pub inputs: &'a BTreeMap<String, Vec<String>>,
    pub seed: u64,
    /// Digest of built-in data the result depends on (absent for most kinds).
    pub data: Option<&'a str>,
}

#[derive(Serialize)]
struct Canonical<'a> {
    encoding: &'a str,
    kind: &'a str,
    version: u32,
    params: BTreeMap<&'a str, &'a Value>,
    files: BTreeMap<&'a str, Vec<&'a str>>,
    inputs: &'a BTreeMap<String, Vec<String>>,
    seed: u64,
    // Left out when absent, so keys of kinds without built-in data are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
}

/// The canonical bytes hashed into a key (sorted maps, typed numbers, no whitespace).
pub fn canonical_bytes(m: &KeyMaterial<'_>) -> Vec<u8> {
    let c = Canonical {
        encoding: ENCODING,
        kind: m.kind,
        version: m.version,
        params: m.params.0.iter().filter(|(k, _)| !m.skip.contains(k.as_str())).map(|(k, v)| (k.as_str(), v)).collect(),
        files: m.files.iter().map(|(k, v)| (k.as_str(), v.iter().map(|(_, d)| d.as_str()).collect())).collect(),
        inputs: m.inputs,
        seed: m.seed,
        data: m.data,
    };
    serde_json::to_vec(&c).expect("key material serializes")
}

/// 128-bit hex key (32 characters).
pub fn instance_key(m: &KeyMaterial<'_>) -> String {
    let hash = blake3::hash(&canonical_bytes(m));
    hash.to_hex()[..32].to_owned()
}

/// blake3 of a file's contents, hex.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material<'a>(params: &'a Params, skip: &'a BTreeSet<&'a str>, files: &'a BTreeMap<String, Vec<(String, String)>>, inputs: &'a BTreeMap<String, Vec<String>>) -> KeyMaterial<'a> {
        KeyMaterial { kind: "collect", version: 1, params, skip, files, inputs, seed: 7, data: None }
    }

    /// A golden value: if this changes, every cached result in the world is invalidated,
    /// so the change must be deliberate (bump ENCODING).
    #[test]
    fn key_encoding_is_stable() {
        let params = Params(BTreeMap::from([
            ("lr".to_owned(), Value::Float(1e-3)),
            ("runs".to_owned(), Value::Int(100)),
            ("weights".to_owned(), Value::Str("upstream".into())),
        ]));
        let skip = BTreeSet::from(["weights"]);
        let files = BTreeMap::new();
        let inputs = BTreeMap::from([("weights".to_owned(), vec!["abc".to_owned()])]);
        let m = material(&params, &skip, &files, &inputs);
        assert_eq!(
            String::from_utf8(canonical_bytes(&m)).unwrap(),
            r#"{"encoding":"wfpipe-key-v1","kind":"collect","version":1,"params":{"lr":0.001,"runs":100},"files":{},"inputs":{"weights":["abc"]},"seed":7}"#
        );
        assert_eq!(instance_key(&m), "3b17b11b7338e28f0fcbe23506a6aa9e");
    }

    #[test]
    fn integer_and_float_parameters_differ() {
        let skip = BTreeSet::new();
        let files = BTreeMap::new();
        let inputs = BTreeMap::new();
        let a = Params(BTreeMap::from([("x".to_owned(), Value::Int(1))]));
        let b = Params(BTreeMap::from([("x".to_owned(), Value::Float(1.0))]));
        assert_ne!(instance_key(&material(&a, &skip, &files, &inputs)), instance_key(&material(&b, &skip, &files, &inputs)));
    }

    #[test]
    fn builtin_data_enters_the_key_only_when_declared() {
        let params = Params(BTreeMap::from([("x".to_owned(), Value::Int(1))]));
        let (skip, files, inputs) = (BTreeSet::new(), BTreeMap::new(), BTreeMap::new());
        let material = |data| KeyMaterial { kind: "table", version: 1, params: &params, skip: &skip, files: &files, inputs: &inputs, seed: 0, data };
        let none = instance_key(&material(None));
        let a = instance_key(&material(Some("aaaa")));
        assert_ne!(none, a);
        assert_ne!(a, instance_key(&material(Some("bbbb"))));
        assert!(!String::from_utf8(canonical_bytes(&material(None))).unwrap().contains("data"));
    }
}
