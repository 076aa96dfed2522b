//! The job file: everything `wfpipe exec-stage` needs to compute one key, on this machine
//! or a cluster node. Written by the executor into the key's work folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wfpipe_stages::kind::{BackendChoice, Params, Value};

use crate::pipeline::{Instance, Pipeline};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputRef {
    pub instance: String,
    pub kind: String,
    pub axes: BTreeMap<String, Value>,
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub key: String,
    pub pipeline: String,
    pub instance: String,
    pub kind: String,
    pub version: u32,
    pub params: Params,
    pub axes: BTreeMap<String, Value>,
    pub seed: u64,
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    pub files: BTreeMap<String, Vec<(String, String)>>,
    pub project_dir: PathBuf,
    pub data_dir: PathBuf,
    pub threads: usize,
    pub backend: BackendChoice,
    #[serde(default)]
    pub data_digest: Option<String>,
}

impl Job {
    pub fn for_instance(p: &Pipeline, inst: &Instance, data_dir: &Path, backend: BackendChoice) -> Job {
        let inputs = inst
            .inputs
            .iter()
            .map(|(param, idx)| {
                let refs = idx
                    .iter()
                    .map(|&i| {
                        let up = &p.instances[i];
                        InputRef { instance: up.id.clone(), kind: up.kind.clone(), axes: up.axes.clone(), key: up.key.clone() }
                    })
                    .collect();
                (param.clone(), refs)
            })
            .collect();
        Job {
            key: inst.key.clone(),
            pipeline: p.name.clone(),
            instance: inst.id.clone(),
            kind: inst.kind.clone(),
            version: inst.version,
            params: inst.params.clone(),
            axes: inst.axes.clone(),
            seed: inst.seed,
            inputs,
            files: inst.files.clone(),
            project_dir: absolute(&p.project_dir),
            data_dir: absolute(data_dir),
            threads: inst.resources.cpus.max(1) as usize,
            backend: if inst.resources.gpus > 0 { backend } else { BackendChoice::Cpu },
            data_digest: inst.data_digest.clone(),
        }
    }

    /// Write atomically (two runs may write the same job at once; both are identical in
    /// everything that matters).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).expect("job serializes"))?;
        std::fs::rename(tmp, path)
    }

    pub fn read(path: &Path) -> std::io::Result<Job> {
        let bytes = std::fs::read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_owned()))
}
