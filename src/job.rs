//! The job file: everything `wfpipe exec-stage` needs to compute one key, on this machine
//! or a cluster node. Written by the executor into the key's work folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wfpipe_stages::kind::BackendChoice;

use crate::cache::Work;
use crate::pipeline::{Instance, Pipeline};
use crate::spec::InstanceSpec;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub key: String,
    pub pipeline: String,
    pub instance: String,
    #[serde(flatten)]
    pub spec: InstanceSpec,
    pub project_dir: PathBuf,
    pub data_dir: PathBuf,
    pub threads: usize,
    pub backend: BackendChoice,
}

impl Job {
    pub fn for_instance(p: &Pipeline, inst: &Instance, data_dir: &Path, backend: BackendChoice) -> Job {
        Job {
            key: inst.key.clone(),
            pipeline: p.name.clone(),
            instance: inst.id.clone(),
            spec: inst.spec.clone(),
            project_dir: absolute(&p.project_dir),
            data_dir: absolute(data_dir),
            threads: inst.resources.cpus.max(1) as usize,
            backend: if inst.resources.gpus > 0 { backend } else { BackendChoice::Cpu },
        }
    }

    /// Write into the key's work folder (created if needed); returns the job file's path.
    pub fn write_to(&self, work: &Work) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(work.dir())?;
        let path = work.job();
        self.write(&path)?;
        Ok(path)
    }

    /// Write atomically (two runs may write the same job at once; both are identical in
    /// everything that matters).
    fn write(&self, path: &Path) -> std::io::Result<()> {
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
