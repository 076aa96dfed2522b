//! One description of an instance: what determines its output. The loader builds it, its
//! key is the hash of it ([`InstanceSpec::key`]), the job file carries it to the process
//! that computes it, and the entry's manifest records it beside the outputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use wfpipe_stages::kind::{Params, Value};

use crate::key::{self, KeyMaterial};

/// One upstream instance a reference parameter selected: its key is in the key; its name,
/// kind and axes travel along so the stage reading it can label what it read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRef {
    pub instance: String,
    pub kind: String,
    pub axes: BTreeMap<String, Value>,
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "SpecFields", into = "SpecFields")]
pub struct InstanceSpec {
    pub kind: String,
    pub version: u32,
    /// Every parameter after defaults and sweeps.
    pub params: Params,
    /// The instance's sweep axes, own and inherited, with their values: labels, not in the
    /// key (the values are already in `params`, or for replicates in `seed`).
    pub axes: BTreeMap<String, Value>,
    pub seed: u64,
    /// Reference parameter -> the upstream instances it selected, in instance-name order.
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    /// File parameter -> (path relative to the project, blake3 of its contents).
    pub files: BTreeMap<String, Vec<(String, String)>>,
    /// See `StageKind::builtin_data_digest`.
    pub data_digest: Option<String>,
    /// Parameters left out of the key: references and file paths (the inputs' keys and the
    /// files' contents stand for them), and parameters the kind gained later, left at their
    /// default, so results cached before they existed stay valid.
    pub unkeyed: BTreeSet<String>,
}

impl InstanceSpec {
    /// The content hash that names the instance's cache entry.
    pub fn key(&self) -> String {
        let skip: BTreeSet<&str> = self.unkeyed.iter().map(String::as_str).collect();
        let inputs = self.input_keys();
        key::instance_key(&KeyMaterial {
            kind: &self.kind,
            version: self.version,
            params: &self.params,
            skip: &skip,
            files: &self.files,
            inputs: &inputs,
            seed: self.seed,
            data: self.data_digest.as_deref(),
        })
    }

    /// Reference parameter -> the upstream keys.
    pub fn input_keys(&self) -> BTreeMap<String, Vec<String>> {
        self.inputs.iter().map(|(param, refs)| (param.clone(), refs.iter().map(|r| r.key.clone()).collect())).collect()
    }

    /// Every upstream instance, whatever parameter selected it.
    pub fn all_inputs(&self) -> impl Iterator<Item = &InputRef> {
        self.inputs.values().flatten()
    }
}

/// How a spec is written: the entry format `wfpipe-entry-v1`, in which `inputs` holds the
/// upstream keys and `input_instances` their names; `input_kinds` and `input_axes` came
/// later and are empty in entries written before them. Older wfpipes read it too.
#[derive(Serialize, Deserialize)]
struct SpecFields {
    kind: String,
    version: u32,
    params: Params,
    axes: BTreeMap<String, Value>,
    seed: u64,
    inputs: BTreeMap<String, Vec<String>>,
    input_instances: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    input_kinds: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    input_axes: BTreeMap<String, Vec<BTreeMap<String, Value>>>,
    files: BTreeMap<String, Vec<(String, String)>>,
    #[serde(default)]
    data_digest: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    unkeyed: BTreeSet<String>,
}

impl From<InstanceSpec> for SpecFields {
    fn from(s: InstanceSpec) -> SpecFields {
        let column = |field: fn(&InputRef) -> String| -> BTreeMap<String, Vec<String>> {
            s.inputs.iter().map(|(param, refs)| (param.clone(), refs.iter().map(field).collect())).collect()
        };
        SpecFields {
            inputs: column(|r| r.key.clone()),
            input_instances: column(|r| r.instance.clone()),
            input_kinds: column(|r| r.kind.clone()),
            input_axes: s.inputs.iter().map(|(param, refs)| (param.clone(), refs.iter().map(|r| r.axes.clone()).collect())).collect(),
            kind: s.kind,
            version: s.version,
            params: s.params,
            axes: s.axes,
            seed: s.seed,
            files: s.files,
            data_digest: s.data_digest,
            unkeyed: s.unkeyed,
        }
    }
}

impl From<SpecFields> for InstanceSpec {
    fn from(f: SpecFields) -> InstanceSpec {
        let nth = |map: &BTreeMap<String, Vec<String>>, param: &str, i: usize| map.get(param).and_then(|v| v.get(i)).cloned().unwrap_or_default();
        let inputs = f
            .inputs
            .iter()
            .map(|(param, keys)| {
                let refs = keys
                    .iter()
                    .enumerate()
                    .map(|(i, key)| InputRef {
                        instance: nth(&f.input_instances, param, i),
                        kind: nth(&f.input_kinds, param, i),
                        axes: f.input_axes.get(param).and_then(|v| v.get(i)).cloned().unwrap_or_default(),
                        key: key.clone(),
                    })
                    .collect();
                (param.clone(), refs)
            })
            .collect();
        InstanceSpec {
            kind: f.kind,
            version: f.version,
            params: f.params,
            axes: f.axes,
            seed: f.seed,
            inputs,
            files: f.files,
            data_digest: f.data_digest,
            unkeyed: f.unkeyed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            kind: "collect".into(),
            version: 1,
            params: Params(BTreeMap::from([
                ("lr".to_owned(), Value::Float(1e-3)),
                ("runs".to_owned(), Value::Int(100)),
                ("weights".to_owned(), Value::Str("upstream".into())),
            ])),
            axes: BTreeMap::from([("lr".to_owned(), Value::Float(1e-3))]),
            seed: 7,
            inputs: BTreeMap::from([(
                "weights".to_owned(),
                vec![InputRef { instance: "up[x=1]".into(), kind: "toy-data".into(), axes: BTreeMap::new(), key: "abc".into() }],
            )]),
            files: BTreeMap::new(),
            data_digest: None,
            unkeyed: BTreeSet::from(["weights".to_owned()]),
        }
    }

    /// The spec's key is the golden key of `key::tests::key_encoding_is_stable`: names,
    /// axes and the inputs' kinds never enter it.
    #[test]
    fn the_key_hashes_what_determines_the_output_and_nothing_else() {
        let s = spec();
        assert_eq!(s.key(), "3b17b11b7338e28f0fcbe23506a6aa9e");
        let mut renamed = s.clone();
        renamed.inputs.get_mut("weights").unwrap()[0].instance = "other".into();
        renamed.axes.clear();
        assert_eq!(renamed.key(), s.key());
        let mut reseeded = s.clone();
        reseeded.seed = 8;
        assert_ne!(reseeded.key(), s.key());
        let mut keyed = s.clone();
        keyed.unkeyed.clear();
        assert_ne!(keyed.key(), s.key(), "an unkeyed parameter enters the key once it is keyed");
    }

    #[test]
    fn a_spec_reads_back_what_it_wrote() {
        let s = spec();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<InstanceSpec>(&text).unwrap(), s);
        // Written in the entry format older wfpipes read: keys in `inputs`, names beside them.
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["inputs"]["weights"], serde_json::json!(["abc"]));
        assert_eq!(json["input_instances"]["weights"], serde_json::json!(["up[x=1]"]));
        assert_eq!(json["input_kinds"]["weights"], serde_json::json!(["toy-data"]));
    }

    #[test]
    fn a_record_without_input_kinds_reads_with_its_input_names() {
        let text = r#"{"kind":"collect","version":1,"params":{"lr":0.001,"runs":100,"weights":"upstream"},
            "axes":{"lr":0.001},"seed":7,"inputs":{"weights":["abc"]},"input_instances":{"weights":["up[x=1]"]},
            "files":{}}"#;
        let s: InstanceSpec = serde_json::from_str(text).unwrap();
        assert_eq!(s.inputs["weights"][0].instance, "up[x=1]");
        assert_eq!(s.inputs["weights"][0].key, "abc");
        assert_eq!(s.input_keys(), BTreeMap::from([("weights".to_owned(), vec!["abc".to_owned()])]));
    }
}
