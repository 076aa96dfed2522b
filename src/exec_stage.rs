//! `wfpipe exec-stage JOB`: compute one key, in its own process, on any executor.
//!
//! Takes the key's lock, returns at once if another process already published the entry,
//! otherwise runs the kind with its log and progress in the key's work folder, writes the
//! result tables, and publishes the entry atomically (manifest last, fsync, rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wfpipe_stages::kind::{InputArtifact, ProgressSink, StageContext};

use crate::cache::{self, lock::KeyLock, Cache, Manifest, Work};
use crate::job::Job;
use crate::kinds::Registry;
use crate::table;

/// Exit codes of `exec-stage` (the executors read them).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_SETUP: i32 = 2;
/// Another process published the entry while this one waited for the lock.
pub const EXIT_CACHED: i32 = 3;

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
    let work = cache.work(&job.key);
    let attempt_mark = work.dir().display().to_string();
    let orphans = crate::orphans::kill_orphans(&attempt_mark);
    crate::orphans::mark(&attempt_mark);
    cache.clean_assembly(&job.key);
    let log = match work.prepare() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot prepare work folder {}: {e}", work.dir().display());
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
    match compute(&cache, &job, &work, registry) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let message = e.to_string();
            eprintln!("error: {message}");
            let _ = fs::write(work.error(), &message);
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

fn compute(cache: &Cache, job: &Job, work: &Work, registry: &Registry) -> Result<(), ComputeError> {
    let spec = &job.spec;
    let kind = registry.get(&spec.kind).ok_or_else(|| ComputeError::UnknownKind { kind: spec.kind.clone() })?;
    if kind.version() != spec.version {
        return Err(ComputeError::Version { kind: spec.kind.clone(), have: kind.version(), want: spec.version });
    }
    // Inputs must be present and intact: a corrupt upstream entry is reported, not used.
    let mut inputs: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    for (param, refs) in &spec.inputs {
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
    for (param, files) in &spec.files {
        for (rel, digest) in files {
            let now = crate::key::file_digest(&job.project_dir.join(rel))
                .map_err(|source| ComputeError::FileUnreadable { rel: rel.clone(), param: param.clone(), source })?;
            if &now != digest {
                return Err(ComputeError::FileChanged { rel: rel.clone() });
            }
        }
    }
    let progress_file = fs::File::create(work.progress()).map_err(|source| ComputeError::Io { context: "cannot create progress file".to_owned(), source })?;
    // Programs run by `command` stages may want to say who they are (logs, counters).
    std::env::set_var("WFPIPE_INSTANCE", &job.instance);
    let sink = FileProgress { file: Mutex::new((progress_file, Instant::now() - std::time::Duration::from_secs(1), BTreeMap::new())) };
    let started = SystemTime::now();
    let clock = Instant::now();
    tracing::info!(instance = %job.instance, key = %job.key, kind = %spec.kind, "computing");
    let (out, scratch) = (work.out(), work.scratch());
    let mut ctx = StageContext {
        params: &spec.params,
        inputs: &inputs,
        axes: &spec.axes,
        out_dir: &out,
        scratch_dir: &scratch,
        project_dir: &job.project_dir,
        data_dir: &job.data_dir,
        seed: spec.seed,
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
    for r in spec.all_inputs() {
        if let Some(why) = cache::verify::check_entry(cache, &r.key) {
            let quarantined = cache::verify::quarantine(cache, &r.key).is_ok();
            return Err(ComputeError::InputModified { instance: r.instance.clone(), why, quarantined });
        }
        // Unchanged, but perhaps made writable: sealed again.
        let _ = cache::seal(&cache.entry_dir(&r.key));
    }
    let mut tables = Vec::new();
    for (name, rows) in std::mem::take(&mut ctx.tables) {
        table::write_rows(&out, &name, &rows).map_err(|e| ComputeError::Table { name: name.clone(), message: e.to_string() })?;
        tables.push(name);
    }
    let duration_s = clock.elapsed().as_secs_f64();
    let metrics = sink.file.lock().expect("progress lock").2.clone();
    let manifest = Manifest {
        format: cache::manifest::FORMAT.into(),
        key: job.key.clone(),
        instance: job.instance.clone(),
        pipeline: job.pipeline.clone(),
        spec: spec.clone(),
        outputs: Vec::new(),
        tables,
        metrics,
        started_unix: started.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        duration_s,
        backend: format!("{:?}", job.backend).to_lowercase(),
        threads: job.threads,
        host: cache::hostname(),
        wfpipe_version: env!("CARGO_PKG_VERSION").into(),
    };
    // stdout is the log (redirected above); what is buffered goes in before the entry copies it.
    let _ = std::io::stdout().flush();
    cache.publish_work(work, manifest).map_err(|source| ComputeError::Io { context: "publishing the entry".to_owned(), source })?;
    tracing::info!(instance = %job.instance, seconds = duration_s, "done");
    Ok(())
}
