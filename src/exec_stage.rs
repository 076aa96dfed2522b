//! `wfpipe exec-stage JOB`: compute one key, in its own process, on any executor.
//!
//! Takes the key's lock, returns at once if another process already published the entry,
//! otherwise runs the kind with its log and progress in the key's work folder, writes the
//! result tables, and publishes the entry atomically (manifest last, fsync, rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wfpipe_stages::kind::{InputArtifact, ProgressSink, StageContext};

use crate::cache::{self, lock::KeyLock, Cache, FileRecord, Manifest};
use crate::job::Job;
use crate::kinds::Registry;
use crate::table;

/// Exit codes of `exec-stage` (the executors read them).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_SETUP: i32 = 2;
/// Another process published the entry while this one waited for the lock.
pub const EXIT_CACHED: i32 = 3;

pub fn progress_path(cache: &Cache, key: &str) -> PathBuf {
    cache.work_dir(key).join("progress.jsonl")
}
pub fn log_path(cache: &Cache, key: &str) -> PathBuf {
    cache.work_dir(key).join("log.txt")
}
pub fn error_path(cache: &Cache, key: &str) -> PathBuf {
    cache.work_dir(key).join("error.txt")
}
pub fn job_path(cache: &Cache, key: &str) -> PathBuf {
    cache.work_dir(key).join("job.json")
}

/// Progress lines for whoever watches (the local executor tails the file; on SLURM the
/// driver reads it over the shared filesystem). Throttled to a few lines a second.
struct FileProgress {
    file: Mutex<(fs::File, Instant, BTreeMap<String, f64>)>,
}

impl FileProgress {
    /// Write the line `make` builds from the latest metrics, unless one was written less
    /// than 200 ms ago (`force` writes anyway); nothing is built for a line not written.
    fn line(&self, force: bool, make: impl FnOnce(&BTreeMap<String, f64>) -> serde_json::Value) {
        let mut guard = self.file.lock().expect("progress lock");
        if !force && guard.1.elapsed().as_millis() < 200 {
            return;
        }
        guard.1 = Instant::now();
        let value = make(&guard.2);
        let _ = writeln!(guard.0, "{value}");
    }
}

impl ProgressSink for FileProgress {
    fn progress(&self, step: u64, total: u64, unit: &str) {
        // Each step line carries the latest metrics: a stage reports a metric right after
        // its step, inside the throttle window, so a line of its own would rarely land.
        self.line(step == total, |metrics| serde_json::json!({ "step": step, "total": total, "unit": unit, "metrics": metrics }));
    }
    fn metric(&self, name: &str, value: f64) {
        self.file.lock().expect("progress lock").2.insert(name.to_owned(), value);
        self.line(false, |_| serde_json::json!({ "metric": name, "value": value }));
    }
}

/// Run a job file; returns the process exit code.
pub fn exec(cache_root: &Path, job_file: &Path, registry: &Registry) -> i32 {
    let job = match Job::read(job_file) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: cannot read job {}: {e}", job_file.display());
            return EXIT_SETUP;
        }
    };
    let cache = match Cache::open(cache_root) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot open cache {}: {e}", cache_root.display());
            return EXIT_SETUP;
        }
    };
    let _lock = match KeyLock::acquire(&cache.lock_path(&job.key)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot lock key {}: {e}", job.key);
            return EXIT_SETUP;
        }
    };
    if cache.is_cached(&job.key) {
        return EXIT_CACHED;
    }
    // An earlier attempt that was killed may have left its programs running.
    let attempt_mark = cache.work_dir(&job.key).display().to_string();
    let orphans = crate::orphans::kill_orphans(&attempt_mark);
    crate::orphans::mark(&attempt_mark);
    clean_assembly_leftovers(&cache, &job.key);
    let work = cache.work_dir(&job.key);
    let out = work.join("out");
    let scratch = work.join("scratch");
    let prepared = (|| -> std::io::Result<fs::File> {
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        fs::create_dir_all(&out)?;
        fs::create_dir_all(&scratch)?;
        let _ = fs::remove_file(error_path(&cache, &job.key));
        fs::File::create(log_path(&cache, &job.key))
    })();
    let log = match prepared {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot prepare work folder {}: {e}", work.display());
            return EXIT_SETUP;
        }
    };
    // From here on everything this process and its children print goes to the log.
    // SAFETY: dup2 on valid descriptors owned by this process.
    unsafe {
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    if orphans > 0 {
        eprintln!("killed {orphans} process(es) left running by an earlier attempt at this key");
    }
    match compute(&cache, &job, &out, &scratch, registry) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let message = e.to_string();
            eprintln!("error: {message}");
            let _ = fs::write(error_path(&cache, &job.key), &message);
            EXIT_FAILED
        }
    }
}

/// Why an instance was not computed; its text is what `error.txt` holds and the
/// executors show.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("this wfpipe has no kind `{kind}`")]
    UnknownKind { kind: String },
    #[error("kind `{kind}` is version {have}, the job asks for {want}")]
    Version { kind: String, have: u32, want: u32 },
    #[error("input `{instance}` ({key}) is not in the cache")]
    InputMissing { instance: String, key: String },
    #[error("input `{instance}` ({key}) is corrupt: {why}; run `wfpipe cache verify`")]
    InputCorrupt { instance: String, key: String, why: String },
    #[error("cannot read `{rel}` for `{param}`: {source}")]
    FileUnreadable { rel: String, param: String, source: std::io::Error },
    #[error("`{rel}` changed since the pipeline was planned; run again to re-plan")]
    FileChanged { rel: String },
    #[error("{0}")]
    Stage(#[from] wfpipe_stages::kind::StageError),
    #[error("the stage panicked: {0}")]
    Panicked(String),
    #[error("the stage modified its input `{instance}` ({why}); {}", if *.quarantined { "that entry is quarantined and will be recomputed" } else { "run `wfpipe cache verify`" })]
    InputModified { instance: String, why: String, quarantined: bool },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("writing table `{name}`: {message}")]
    Table { name: String, message: String },
    #[error("{0}")]
    ThreadPool(String),
}

fn compute(cache: &Cache, job: &Job, out: &Path, scratch: &Path, registry: &Registry) -> Result<(), ComputeError> {
    let kind = registry.get(&job.kind).ok_or_else(|| ComputeError::UnknownKind { kind: job.kind.clone() })?;
    if kind.version() != job.version {
        return Err(ComputeError::Version { kind: job.kind.clone(), have: kind.version(), want: job.version });
    }
    // Inputs must be present and intact: a corrupt upstream entry is reported, not used.
    let mut inputs: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    for (param, refs) in &job.inputs {
        for r in refs {
            if !cache.is_cached(&r.key) {
                return Err(ComputeError::InputMissing { instance: r.instance.clone(), key: r.key.clone() });
            }
            if let Some(why) = cache::verify::check_entry(cache, &r.key) {
                return Err(ComputeError::InputCorrupt { instance: r.instance.clone(), key: r.key.clone(), why });
            }
            inputs.entry(param.clone()).or_default().push(InputArtifact {
                instance: r.instance.clone(),
                kind: r.kind.clone(),
                axes: r.axes.clone(),
                key: r.key.clone(),
                dir: cache.out_dir(&r.key),
            });
        }
    }
    for (param, files) in &job.files {
        for (rel, digest) in files {
            let now = crate::key::file_digest(&job.project_dir.join(rel))
                .map_err(|source| ComputeError::FileUnreadable { rel: rel.clone(), param: param.clone(), source })?;
            if &now != digest {
                return Err(ComputeError::FileChanged { rel: rel.clone() });
            }
        }
    }
    let progress_file = fs::File::create(progress_path(cache, &job.key)).map_err(|source| ComputeError::Io { context: "cannot create progress file".to_owned(), source })?;
    // Programs run by `command` stages may want to say who they are (logs, counters).
    std::env::set_var("WFPIPE_INSTANCE", &job.instance);
    let sink = FileProgress { file: Mutex::new((progress_file, Instant::now() - std::time::Duration::from_secs(1), BTreeMap::new())) };
    let started = SystemTime::now();
    let clock = Instant::now();
    tracing::info!(instance = %job.instance, key = %job.key, kind = %job.kind, "computing");
    let mut ctx = StageContext {
        params: &job.params,
        inputs: &inputs,
        axes: &job.axes,
        out_dir: out,
        scratch_dir: scratch,
        project_dir: &job.project_dir,
        data_dir: &job.data_dir,
        seed: job.seed,
        threads: job.threads,
        backend: job.backend,
        progress: &sink,
        tables: BTreeMap::new(),
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(job.threads.max(1)).build().map_err(|e| ComputeError::ThreadPool(e.to_string()))?;
    let result = pool.install(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.run(&mut ctx))));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            return Err(ComputeError::Panicked(msg));
        }
    }
    // Inputs are sealed read-only, but root can write anyway: a stage that changed what it
    // read has corrupted another entry, and its own result is not trusted either.
    for refs in job.inputs.values() {
        for r in refs {
            if let Some(why) = cache::verify::check_entry(cache, &r.key) {
                let quarantined = cache::verify::quarantine(cache, &r.key).is_ok();
                return Err(ComputeError::InputModified { instance: r.instance.clone(), why, quarantined });
            }
            // Unchanged, but perhaps made writable: sealed again.
            let _ = cache::seal(&cache.entry_dir(&r.key));
        }
    }
    let mut table_names = Vec::new();
    for (name, rows) in std::mem::take(&mut ctx.tables) {
        table::write_rows(out, &name, &rows).map_err(|e| ComputeError::Table { name: name.clone(), message: e.to_string() })?;
        table_names.push(name);
    }
    let duration = clock.elapsed().as_secs_f64();
    let metrics = sink.file.lock().expect("progress lock").2.clone();
    publish(cache, job, out, table_names, metrics, started, duration).map_err(|source| {
        clean_assembly_leftovers(cache, &job.key);
        ComputeError::Io { context: "publishing the entry".to_owned(), source }
    })?;
    tracing::info!(instance = %job.instance, seconds = duration, "done");
    Ok(())
}

fn publish(
    cache: &Cache,
    job: &Job,
    out: &Path,
    tables: Vec<String>,
    metrics: BTreeMap<String, f64>,
    started: SystemTime,
    duration_s: f64,
) -> std::io::Result<()> {
    let assembled = cache.tmp_dir().join(format!("{}.{}", job.key, std::process::id()));
    if assembled.exists() {
        fs::remove_dir_all(&assembled)?;
    }
    fs::create_dir_all(&assembled)?;
    fs::rename(out, assembled.join("out"))?;
    let mut outputs = Vec::new();
    for rel in cache::list_files(&assembled.join("out"))? {
        let path = assembled.join("out").join(&rel);
        if !fs::symlink_metadata(&path)?.is_file() {
            // A link's target can change after publication; an entry holds only files.
            return Err(std::io::Error::other(format!("output `{}` is not a regular file (a symbolic link?)", rel.display())));
        }
        fs::File::open(&path)?.sync_all()?;
        outputs.push(FileRecord {
            path: rel.to_string_lossy().replace('\\', "/"),
            size: fs::metadata(&path)?.len(),
            blake3: crate::key::file_digest(&path)?,
        });
    }
    let _ = std::io::stdout().flush();
    let _ = fs::copy(log_path(cache, &job.key), assembled.join("log.txt"));
    let manifest = Manifest {
        format: cache::manifest::FORMAT.into(),
        key: job.key.clone(),
        kind: job.kind.clone(),
        version: job.version,
        instance: job.instance.clone(),
        pipeline: job.pipeline.clone(),
        params: job.params.clone(),
        axes: job.axes.clone(),
        seed: job.seed,
        inputs: job.inputs.iter().map(|(k, v)| (k.clone(), v.iter().map(|r| r.key.clone()).collect())).collect(),
        input_instances: job.inputs.iter().map(|(k, v)| (k.clone(), v.iter().map(|r| r.instance.clone()).collect())).collect(),
        files: job.files.clone(),
        data_digest: job.data_digest.clone(),
        outputs,
        tables,
        metrics,
        started_unix: started.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        duration_s,
        backend: format!("{:?}", job.backend).to_lowercase(),
        threads: job.threads,
        host: hostname(),
        wfpipe_version: env!("CARGO_PKG_VERSION").into(),
    };
    let mpath = assembled.join("manifest.json");
    {
        let mut f = fs::File::create(&mpath)?;
        f.write_all(&serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))?;
        f.sync_all()?;
    }
    cache::fsync_dir(&assembled.join("out"))?;
    cache::fsync_dir(&assembled)?;
    cache.publish(&assembled, &job.key)?;
    let _ = cache.record_index(&job.pipeline, &job.instance, &job.key);
    // The scratch folder (checkpoints) is no longer needed once the result exists.
    let _ = fs::remove_dir_all(cache.work_dir(&job.key).join("scratch"));
    Ok(())
}

/// Folders an earlier attempt at `key` was assembling in `tmp/` when it died or failed
/// (only the lock holder calls this, so none of them is in use).
fn clean_assembly_leftovers(cache: &Cache, key: &str) {
    let prefix = format!("{key}.");
    let Ok(entries) = fs::read_dir(cache.tmp_dir()) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = cache::remove_tree(&e.path());
        }
    }
}

pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
}
