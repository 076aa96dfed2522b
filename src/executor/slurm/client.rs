//! The SLURM command-line tools (`sbatch`, `squeue`, `scancel`, `sacct`, `scontrol`),
//! found on PATH, each call bounded in time and its output parsed into typed results.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::state::JobState;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run `{tool}`: {source} (is SLURM installed and on PATH?)")]
    Spawn { tool: String, source: std::io::Error },
    #[error("`{tool}` did not answer within {secs} s")]
    Timeout { tool: String, secs: u64 },
    #[error("`{tool}` failed ({status}): {stderr}")]
    Failed { tool: String, status: String, stderr: String },
    #[error("cannot parse the output of `{tool}`: {output:?}")]
    Parse { tool: String, output: String },
}

/// One SLURM job or array task: `123` or `123_4`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl JobId {
    pub fn new(job: u64, task: Option<usize>) -> JobId {
        JobId(match task {
            Some(t) => format!("{job}_{t}"),
            None => job.to_string(),
        })
    }

    /// The job (array) id without the task.
    pub fn base(&self) -> &str {
        self.0.split('_').next().unwrap_or(&self.0)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// Run a tool with a time limit; stdout on success.
fn run(tool: &str, args: &[String]) -> Result<String, SlurmError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SlurmError::Spawn { tool: tool.into(), source })?;
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    // Read both pipes on threads so a chatty tool never blocks on a full pipe.
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SlurmError::Timeout { tool: tool.into(), secs: TIMEOUT.as_secs() });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(source) => return Err(SlurmError::Spawn { tool: tool.into(), source }),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        return Err(SlurmError::Failed { tool: tool.into(), status: status.to_string(), stderr: stderr.trim().to_owned() });
    }
    Ok(stdout)
}

/// `sbatch --parsable FLAGS SCRIPT`; returns the job id.
pub fn sbatch(flags: &[String], script: &Path) -> Result<u64, SlurmError> {
    let mut args = vec!["--parsable".to_owned()];
    args.extend(flags.iter().cloned());
    args.push(script.to_string_lossy().into_owned());
    let out = run("sbatch", &args)?;
    // `123` or `123;cluster`.
    let id = out.trim().split(';').next().unwrap_or("");
    id.parse().map_err(|_| SlurmError::Parse { tool: "sbatch".into(), output: out.clone() })
}

/// What the queue says about one job or task.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueEntry {
    pub state: JobState,
    pub reason: String,
}

/// `squeue -t all`: every job of this user the controller still remembers, one line per
/// array task. Keys are `123` / `123_4`.
pub fn squeue() -> Result<HashMap<JobId, QueueEntry>, SlurmError> {
    let user = current_user();
    let mut args = vec!["-h".into(), "-r".into(), "-t".into(), "all".into(), "-o".into(), "%i|%T|%r".into()];
    if let Some(u) = user {
        args.push("-u".into());
        args.push(u);
    }
    let out = run("squeue", &args)?;
    Ok(parse_squeue(&out))
}

pub fn parse_squeue(out: &str) -> HashMap<JobId, QueueEntry> {
    let mut map = HashMap::new();
    for line in out.lines() {
        let mut parts = line.trim().splitn(3, '|');
        let (Some(id), Some(state)) = (parts.next(), parts.next()) else { continue };
        if id.is_empty() || id.contains('[') {
            continue;
        }
        let reason = parts.next().unwrap_or("").to_owned();
        map.insert(JobId(id.to_owned()), QueueEntry { state: JobState::parse(state), reason });
    }
    map
}

/// `sacct` for jobs the controller has forgotten; empty when accounting is disabled.
pub fn sacct(bases: &[&str]) -> HashMap<JobId, QueueEntry> {
    if bases.is_empty() {
        return HashMap::new();
    }
    let args = vec![
        "-n".into(),
        "-P".into(),
        "-X".into(),
        "-o".into(),
        "JobID,State,Reason".into(),
        "-j".into(),
        bases.join(","),
    ];
    match run("sacct", &args) {
        Ok(out) => {
            let mut map = HashMap::new();
            for line in out.lines() {
                let mut parts = line.trim().splitn(3, '|');
                let (Some(id), Some(state)) = (parts.next(), parts.next()) else { continue };
                if id.contains('[') || id.contains('.') {
                    continue;
                }
                // `CANCELLED by 0` -> CANCELLED
                let state = state.split_whitespace().next().unwrap_or("");
                map.insert(JobId(id.to_owned()), QueueEntry { state: JobState::parse(state), reason: parts.next().unwrap_or("").to_owned() });
            }
            map
        }
        Err(e) => {
            tracing::debug!("sacct unavailable: {e}");
            HashMap::new()
        }
    }
}

/// `scancel ID...` for the given jobs or tasks only.
pub fn scancel(ids: &[JobId]) -> Result<(), SlurmError> {
    if ids.is_empty() {
        return Ok(());
    }
    for chunk in ids.chunks(500) {
        let args: Vec<String> = chunk.iter().map(|j| j.0.clone()).collect();
        run("scancel", &args)?;
    }
    Ok(())
}

/// The cluster's MaxArraySize (array indices must stay below it).
pub fn max_array_size() -> Option<usize> {
    let out = run("scontrol", &["show".to_owned(), "config".to_owned()]).ok()?;
    out.lines()
        .find(|l| l.trim_start().starts_with("MaxArraySize"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether SLURM answers at all (used for friendly errors before submitting).
pub fn ping() -> Result<(), SlurmError> {
    let args: Vec<String> = ["-h", "-o", "%i", "-j", "0"].iter().map(|s| s.to_string()).collect();
    match run("squeue", &args) {
        Ok(_) => Ok(()),
        // `Invalid job id specified` means the controller answered.
        Err(SlurmError::Failed { ref stderr, .. }) if stderr.contains("Invalid job id") => Ok(()),
        Err(e) => Err(e),
    }
}

fn current_user() -> Option<String> {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).or_else(|| {
        // SAFETY: getuid cannot fail; getpwuid returns null or a valid entry.
        unsafe {
            let pw = libc::getpwuid(libc::getuid());
            if pw.is_null() {
                return None;
            }
            std::ffi::CStr::from_ptr((*pw).pw_name).to_str().ok().map(str::to_owned)
        }
    })
}

/// A job or task in the queue; a bare array id stands for its tasks (live if any is).
pub fn lookup(queue: &HashMap<JobId, QueueEntry>, job: &JobId) -> Option<QueueEntry> {
    if let Some(e) = queue.get(job) {
        return Some(e.clone());
    }
    if job.0.contains('_') {
        return None;
    }
    let prefix = format!("{}_", job.0);
    let tasks: Vec<&QueueEntry> = queue.iter().filter(|(k, _)| k.0.starts_with(&prefix)).map(|(_, v)| v).collect();
    if tasks.is_empty() {
        return None;
    }
    tasks.iter().find(|e| e.state == JobState::Running).or_else(|| tasks.iter().find(|e| e.state.is_live())).or(tasks.first()).map(|e| (*e).clone())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines() {
        let m = parse_squeue("12_0|COMPLETED|None\n12_1|PENDING|DependencyNeverSatisfied\n13|RUNNING|None\n14_[0-3]|PENDING|None\n");
        assert_eq!(m.len(), 3);
        assert_eq!(m[&JobId("12_1".into())].state, JobState::Pending);
        assert_eq!(m[&JobId("12_1".into())].reason, "DependencyNeverSatisfied");
        assert_eq!(m[&JobId("13".into())].state, JobState::Running);
        assert_eq!(JobId::new(12, Some(3)).base(), "12");
    }
}
