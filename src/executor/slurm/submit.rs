//! Writing batch scripts and calling `sbatch`: one call per group (an array or a single
//! job). Every job of a run carries the run id in its `--comment` and is recorded per key
//! in `slurm.json`; SLURM's own output file lands in the key's work folder.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use wfpipe_stages::kind::Resources;

use super::client::{self, JobId, SlurmError};
use super::config::SlurmConfig;
use super::groups::{Dependency, Group};
use super::record::{self, SlurmRecord};
use crate::cache::Cache;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Slurm(#[from] SlurmError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SubmitError + '_ {
    move |source| SubmitError::Io { path: path.to_owned(), source }
}

/// Single-quote for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub struct Submitter<'a> {
    pub cache: &'a Cache,
    pub config: &'a SlurmConfig,
    /// The wfpipe binary compute nodes run.
    pub exe: PathBuf,
    pub run_id: String,
    /// `cache/work/_slurm/<run id>/`: scripts, job lists, worker queues.
    pub run_dir: PathBuf,
    pub array_limit: usize,
    /// `sbatch` calls made so far.
    pub sbatch_calls: usize,
    /// Tasks per array submitted by this run.
    pub array_sizes: HashMap<String, usize>,
    next_group: usize,
}

impl<'a> Submitter<'a> {
    pub fn new(cache: &'a Cache, config: &'a SlurmConfig, exe: PathBuf, run_id: String) -> Result<Submitter<'a>, SubmitError> {
        let run_dir = cache.root().join("work").join("_slurm").join(&run_id);
        fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
        // Array indices must stay below the cluster's MaxArraySize.
        let array_limit = match client::max_array_size() {
            Some(max) if max > 1 => config.array_limit.min(max - 1),
            _ => config.array_limit,
        };
        Ok(Submitter { cache, config, exe, run_id, run_dir, array_limit, sbatch_calls: 0, array_sizes: HashMap::new(), next_group: 0 })
    }

    /// Flags for a job of this run with the given resources.
    fn flags(&self, name: &str, r: Resources, dependency: &Dependency) -> Vec<String> {
        let mut f = vec![
            format!("--job-name=wfpipe:{name}"),
            format!("--comment=wfpipe-run={}", self.run_id),
            format!("--cpus-per-task={}", r.cpus.max(1)),
            format!("--mem={}M", r.mem_mb.max(1)),
            "--no-requeue".to_owned(),
        ];
        if r.gpus > 0 {
            f.push(format!("--gres=gpu:{}", r.gpus));
        }
        if r.time_min > 0 {
            f.push(format!("--time={}", r.time_min));
        }
        if let Some(d) = dependency.flag() {
            f.push(d);
            f.push(format!("--kill-on-invalid-dep={}", if self.config.kill_invalid_dep { "yes" } else { "no" }));
        }
        f.extend(self.config.common_flags());
        f
    }

    /// Submit one group of instances (their job files are already written); returns the
    /// SLURM id of each member, in order.
    pub fn submit_group(&mut self, stage: &str, group: &Group, keys: &[(&str, &str)]) -> Result<Vec<JobId>, SubmitError> {
        let g = self.next_group;
        self.next_group += 1;
        let list = self.run_dir.join(format!("g{g}.list"));
        // Line `task + 1` holds the job file of that array task (gaps stay empty).
        let lines = group.tasks.iter().max().map_or(1, |m| m + 1);
        let mut rows = vec![String::new(); lines];
        for (&t, (key, _)) in group.tasks.iter().zip(keys) {
            rows[t] = self.cache.work(key).job().to_string_lossy().into_owned();
        }
        let text = rows.join("\n") + "\n";
        fs::write(&list, text).map_err(io(&list))?;
        let script = self.run_dir.join(format!("g{g}.sh"));
        let body = self.stage_script(stage, keys.len(), &list);
        fs::write(&script, body).map_err(io(&script))?;
        let mut flags = self.flags(stage, group.resources, &group.dependency);
        let array = keys.len() > 1;
        if array {
            // SLURM's output goes through `g<N>.d/<task>`, a link to the key's work folder.
            let links = self.run_dir.join(format!("g{g}.d"));
            fs::create_dir_all(&links).map_err(io(&links))?;
            for (t, (key, _)) in group.tasks.iter().zip(keys) {
                let link = links.join(t.to_string());
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(self.cache.work(key).dir(), &link).map_err(io(&link))?;
            }
            flags.push(format!("--array={}", super::groups::array_spec(&group.tasks)));
            flags.push(format!("--output={}/%a/slurm-%A_%a.out", links.display()));
        } else {
            flags.push(format!("--output={}/slurm-%j.out", self.cache.work(keys[0].0).dir().display()));
        }
        self.sbatch_calls += 1;
        let job = client::sbatch(&flags, &script)?;
        if array {
            self.array_sizes.insert(job.to_string(), keys.len());
        }
        let now = record::now_unix();
        let mut ids = Vec::with_capacity(keys.len());
        for (&t, (key, instance)) in group.tasks.iter().zip(keys) {
            let id = JobId::new(job, array.then_some(t));
            let rec = SlurmRecord { job: id.0.clone(), run: self.run_id.clone(), instance: (*instance).to_owned(), submitted_unix: now, packed: false };
            let path = record::path(self.cache, key);
            record::write(self.cache, key, &rec).map_err(io(&path))?;
            ids.push(id);
        }
        tracing::debug!(stage, job, tasks = keys.len(), sbatch_calls = self.sbatch_calls, "submitted");
        Ok(ids)
    }

    fn stage_script(&self, stage: &str, n: usize, list: &Path) -> String {
        format!(
            "#!/bin/sh\n\
             # wfpipe run {run}: stage `{stage}`, {n} instance(s), job files listed in the file below.\n\
             LIST={list}\n\
             LINE=$(( ${{SLURM_ARRAY_TASK_ID:-0}} + 1 ))\n\
             JOB=$(sed -n \"${{LINE}}p\" \"$LIST\")\n\
             if [ -z \"$JOB\" ]; then echo \"wfpipe: no job file at line $LINE of $LIST\" >&2; exit 2; fi\n\
             export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\" OMP_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n\
             {exe} exec-stage --cache {cache} \"$JOB\"\n\
             rc=$?\n\
             # 3: another process published the key meanwhile, a success for dependents.\n\
             if [ \"$rc\" -eq 3 ]; then rc=0; fi\n\
             exit \"$rc\"\n",
            run = self.run_id,
            list = sh_quote(&list.to_string_lossy()),
            exe = sh_quote(&self.exe.to_string_lossy()),
            cache = sh_quote(&self.cache.root().to_string_lossy()),
        )
    }

    /// Submit `workers` packed worker jobs (one array) that drain `queue`.
    pub fn submit_workers(&mut self, queue: &Path, workers: usize, per_worker: usize, resources: Resources) -> Result<JobId, SubmitError> {
        let g = self.next_group;
        self.next_group += 1;
        let script = self.run_dir.join(format!("w{g}.sh"));
        let logs = self.run_dir.join("workers");
        fs::create_dir_all(&logs).map_err(io(&logs))?;
        let body = format!(
            "#!/bin/sh\n\
             # wfpipe run {run}: a worker that computes keys from the queue below until it is empty.\n\
             export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\" OMP_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n\
             exec {exe} slurm-worker --cache {cache} --max {max} {queue}\n",
            run = self.run_id,
            exe = sh_quote(&self.exe.to_string_lossy()),
            cache = sh_quote(&self.cache.root().to_string_lossy()),
            max = per_worker,
            queue = sh_quote(&queue.to_string_lossy()),
        );
        fs::write(&script, body).map_err(io(&script))?;
        let mut flags = self.flags("worker", resources, &Dependency::None);
        if workers > 1 {
            flags.push(format!("--array=0-{}", workers - 1));
            flags.push(format!("--output={}/slurm-%A_%a.out", logs.display()));
        } else {
            flags.push(format!("--output={}/slurm-%j.out", logs.display()));
        }
        self.sbatch_calls += 1;
        let job = client::sbatch(&flags, &script)?;
        if workers > 1 {
            self.array_sizes.insert(job.to_string(), workers);
        }
        Ok(JobId::new(job, None))
    }
}
