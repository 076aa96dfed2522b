//! The SLURM executor against a real SLURM (`tools/slurm-local.sh start`, then
//! `. /tmp/wfpipe-slurm/env.sh`). Without a cluster each test prints `SKIPPED: <reason>`
//! to the terminal and returns; with `WFPIPE_REQUIRE_SLURM=1` (set by env.sh) it fails.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why SLURM cannot be used here, if it cannot.
fn unavailable() -> Option<String> {
    let out = match Command::new("sinfo").args(["-h", "-o", "%T"]).stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) => return Some(format!("`sinfo` cannot run ({e}); start SLURM with tools/slurm-local.sh")),
    };
    if !out.status.success() {
        return Some(format!("`sinfo` failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let states = String::from_utf8_lossy(&out.stdout);
    // A node that is busy (allocated, mixed, completing) still runs jobs later.
    let unusable = ["down", "drain", "fail", "inval", "unk", "future", "maint", "reboot", "power"];
    if !states.lines().any(|s| !s.trim().is_empty() && !unusable.iter().any(|bad| s.trim().starts_with(bad))) {
        return Some(format!("no usable SLURM node (states: {:?})", states.trim()));
    }
    if Command::new("sbatch").arg("--version").output().is_err() {
        return Some("`sbatch` is not on PATH".into());
    }
    None
}

/// True when the test can run; otherwise says so loudly (never a silent pass).
fn slurm_ready(test: &str) -> bool {
    let Some(reason) = unavailable() else { return true };
    if std::env::var("WFPIPE_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!("{test}: SLURM is required (WFPIPE_REQUIRE_SLURM=1) but unavailable: {reason}");
    }
    // Straight to the terminal: the test harness captures only print!/eprint!.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    false
}

/// Poll until `f` returns Some, at most `limit`; None if it never does.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Poll until `f` returns Some, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

fn slurm_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--executor", "slurm"]);
    v
}

/// Files of every entry: key -> relative path -> bytes.
fn entries(cache: &Path) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let Ok(shards) = std::fs::read_dir(cache.join("entries")) else { return out };
    for shard in shards.flatten() {
        for entry in std::fs::read_dir(shard.path()).unwrap().flatten() {
            let key = entry.file_name().to_string_lossy().into_owned();
            let mut files = BTreeMap::new();
            collect(&entry.path().join("out"), &entry.path().join("out"), &mut files);
            out.insert(key, files);
        }
    }
    out
}

fn collect(base: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            collect(base, &e.path(), files);
        } else {
            files.insert(e.path().strip_prefix(base).unwrap().display().to_string(), std::fs::read(e.path()).unwrap());
        }
    }
}

/// Every `slurm.json` record in a cache: key -> job id.
fn records(cache: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(cache.join("work")) else { return out };
    for e in rd.flatten() {
        let Ok(bytes) = std::fs::read(e.path().join("slurm.json")) else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
        let Some(job) = v["job"].as_str() else { continue };
        out.insert(e.file_name().to_string_lossy().into_owned(), job.to_owned());
    }
    out
}

/// SLURM's state of a job or task (`squeue -t all`).
fn job_state(id: &str) -> String {
    let o = Command::new("squeue").args(["-h", "-r", "-t", "all", "-o", "%i|%T", "-j", id.split('_').next().unwrap()]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.split_once('|').filter(|(i, _)| *i == id).map(|(_, s)| s.trim().to_owned()))
        .unwrap_or_default()
}

/// A folder with an `sbatch` that counts its calls, then runs the real one.
fn counting_sbatch(dir: &Path) -> (String, PathBuf) {
    let real = String::from_utf8(Command::new("sh").args(["-c", "command -v sbatch"]).output().unwrap().stdout).unwrap().trim().to_owned();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = dir.join("sbatch-calls.txt");
    let script = bin.join("sbatch");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n", calls.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    (path, calls)
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0)
}

#[test]
fn results_are_byte_identical_to_the_local_executor() {
    if !slurm_ready("results_are_byte_identical_to_the_local_executor") {
        return;
    }
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    let local = p.computed();
    p.clear_counter();
    let slurm_cache = p.path().join("cache-slurm");
    let o = p.cmd(&slurm_args(&["run", "pipelines/demo.toml"])).env("WFPIPE_CACHE", &slurm_cache).output().unwrap();
    assert_ok(&o);
    let t = text(&o);
    assert!(t.contains("queued"), "{t}");
    assert_eq!(p.computed(), local, "{t}");
    let a = entries(&p.cache());
    let b = entries(&slurm_cache);
    assert_eq!(a.len(), 7);
    assert_eq!(a, b, "the SLURM cache differs from the local one");
    // SLURM's own output file sits in each key's work folder, beside exec-stage's log.
    for key in b.keys() {
        let work = slurm_cache.join("work").join(key);
        let names: Vec<String> = std::fs::read_dir(&work).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert!(names.iter().any(|n| n.starts_with("slurm-") && n.ends_with(".out")), "{}: {names:?}", work.display());
    }
    // A second SLURM run has nothing to do.
    let o = p.cmd(&slurm_args(&["run", "pipelines/demo.toml"])).env("WFPIPE_CACHE", &slurm_cache).output().unwrap();
    assert_ok(&o);
    assert!(text(&o).contains("7 cached, 0 to run"), "{}", text(&o));
}

const FAIL: &str = r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "if [ $N = 2 ]; then echo boom >&2; exit 3; fi; echo $N > a.txt"]
outputs = ["a.txt"]
matrix.env.N = ["1", "2"]

[stage.b]
kind = "command"
input = "a"
cmd = ["sh", "-c", "cp $WFPIPE_INPUT/a.txt b.txt"]
outputs = ["b.txt"]

[stage.c]
kind = "command"
input = "b"
cmd = ["sh", "-c", "cp $WFPIPE_INPUT/b.txt c.txt"]
outputs = ["c.txt"]
"#;

#[test]
fn a_failed_job_makes_its_dependents_not_run_and_names_its_log() {
    if !slurm_ready("a_failed_job_makes_its_dependents_not_run_and_names_its_log") {
        return;
    }
    let p = Project::new();
    p.write("pipelines/fail.toml", FAIL);
    let o = p.run(&slurm_args(&["run", "pipelines/fail.toml", "--keep-going"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("a[N=2]: `sh` exited with status 3"), "{t}");
    assert!(t.contains("not run because a[N=2] failed: b[N=2], c[N=2]"), "{t}");
    let log_line = t.lines().find(|l| l.trim_start().starts_with("log: ")).unwrap();
    let log = std::fs::read_to_string(log_line.trim_start().trim_start_matches("log: ")).unwrap();
    assert!(log.contains("boom"), "{log}");
    // The healthy branch finished; the dependents' jobs are no longer queued.
    let status = text(&p.run(&["status", "pipelines/fail.toml"]));
    assert!(status.contains("3 cached, 0 running, 1 failed, 2 not run"), "{status}");
    // SLURM records a job's end a moment after its script exits (seconds on a loaded
    // node), so a finished job may still read RUNNING; a dependent left queued would stay
    // PENDING and fail the wait.
    let recs = records(&p.cache());
    let mut live = Vec::new();
    let left = poll(Duration::from_secs(60), || {
        live = recs
            .values()
            .map(|job| (job, job_state(job)))
            .filter(|(_, s)| matches!(s.as_str(), "PENDING" | "RUNNING"))
            .map(|(job, s)| format!("{job} {s}"))
            .collect::<Vec<_>>();
        live.is_empty().then_some(())
    });
    assert!(left.is_some(), "jobs still queued or running after 60 s: {live:?}");
}

#[test]
fn detach_returns_at_once_and_status_follows_to_completion() {
    if !slurm_ready("detach_returns_at_once_and_status_follows_to_completion") {
        return;
    }
    let p = Project::new();
    p.write(
        "pipelines/slow.toml",
        r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "sleep 3; echo $N > a.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["a.txt"]
matrix.env.N = ["1", "2"]

[stage.b]
kind = "command"
deps = ["a"]
cmd = ["sh", "-c", "for d in $(echo $WFPIPE_DEPS | tr ':' ' '); do cat $d/a.txt; done > b.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["b.txt"]
"#,
    );
    let start = Instant::now();
    let o = p.run(&slurm_args(&["run", "pipelines/slow.toml", "--detach"]));
    assert_ok(&o);
    let t = text(&o);
    assert!(t.contains("3 instance(s) submitted"), "{t}");
    assert!(start.elapsed() < Duration::from_secs(3), "--detach waited for the jobs");
    let mut seen_live = Vec::new();
    let done = wait_for("the detached run to finish", Duration::from_secs(120), || {
        let s = text(&p.run(&["status", "pipelines/slow.toml"]));
        if s.contains("3 cached, 0 running") {
            return Some(s);
        }
        assert!(!s.contains("failed   "), "{s}");
        if s.contains("queued   ") || s.contains("running  ") {
            seen_live.push(s);
        }
        None
    });
    assert!(!seen_live.is_empty(), "status never showed queued or running instances; last: {done}");
    assert!(seen_live.iter().any(|s| s.contains("(SLURM job ")), "{seen_live:?}");
    assert_eq!(p.computed(), vec!["a[N=1]", "a[N=2]", "b"]);
    // A later run reconciles from the cache: nothing to submit.
    let o = p.run(&slurm_args(&["run", "pipelines/slow.toml"]));
    assert!(text(&o).contains("3 cached, 0 to run"), "{}", text(&o));
}

#[test]
fn ctrl_c_cancels_exactly_this_runs_jobs() {
    if !slurm_ready("ctrl_c_cancels_exactly_this_runs_jobs") {
        return;
    }
    let p = Project::new();
    p.write(
        "pipelines/long.toml",
        r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "sleep 120; echo $N > a.txt"]
outputs = ["a.txt"]
matrix.env.N = ["1", "2"]

[stage.b]
kind = "command"
input = "a"
cmd = ["sh", "-c", "cp $WFPIPE_INPUT/a.txt b.txt"]
outputs = ["b.txt"]
"#,
    );
    // A job submitted outside wfpipe.
    let outside = Command::new("sbatch")
        .args(["--parsable", "--job-name=outside", "--output=/dev/null", "--wrap", "sleep 300"])
        .output()
        .unwrap();
    assert!(outside.status.success(), "{}", String::from_utf8_lossy(&outside.stderr));
    let outside = String::from_utf8_lossy(&outside.stdout).trim().split(';').next().unwrap().to_owned();
    let mut child = p.cmd(&slurm_args(&["run", "pipelines/long.toml"])).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until this run's first-stage jobs run.
    let recs = wait_for("the run's jobs to start", Duration::from_secs(180), || {
        let r = records(&p.cache());
        (r.len() == 4 && r.values().filter(|j| job_state(j) == "RUNNING").count() == 2).then_some(r)
    });
    wait_for("the outside job to run", Duration::from_secs(180), || (job_state(&outside) == "RUNNING").then_some(()));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let start = Instant::now();
    let status = wait_for("the driver to exit", Duration::from_secs(60), || child.try_wait().unwrap());
    let o = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(30));
    for job in recs.values() {
        let s = wait_for("this run's job to be cancelled", Duration::from_secs(30), || {
            let s = job_state(job);
            (s == "CANCELLED").then_some(s)
        });
        assert_eq!(s, "CANCELLED", "job {job}");
    }
    let outside_state = job_state(&outside);
    let _ = Command::new("scancel").arg(&outside).status();
    assert_eq!(outside_state, "RUNNING", "the outside job was touched");
}

#[test]
fn a_killed_driver_rerun_neither_recomputes_nor_submits_twice() {
    if !slurm_ready("a_killed_driver_rerun_neither_recomputes_nor_submits_twice") {
        return;
    }
    let p = Project::new();
    p.write(
        "pipelines/chain.toml",
        r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "echo $N > a.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["a.txt"]
matrix.env.N = ["1", "2", "3"]

[stage.b]
kind = "command"
input = "a"
cmd = ["sh", "-c", "sleep 4; cp $WFPIPE_INPUT/a.txt b.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["b.txt"]
"#,
    );
    let (path, calls) = counting_sbatch(p.path());
    let mut child = p.cmd(&slurm_args(&["run", "pipelines/chain.toml"])).env("PATH", &path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Kill the driver (no clean-up possible) once the first stage is done.
    wait_for("stage a to finish", Duration::from_secs(180), || (p.computed().iter().filter(|c| c.starts_with("a[")).count() == 3).then_some(()));
    child.kill().unwrap();
    child.wait().unwrap();
    let first_calls = count_lines(&calls);
    assert!(first_calls >= 1);
    let o = p.cmd(&slurm_args(&["run", "pipelines/chain.toml"])).env("PATH", &path).output().unwrap();
    assert_ok(&o);
    let t = text(&o);
    assert_eq!(count_lines(&calls), first_calls, "the re-run submitted again:\n{t}");
    assert!(t.contains("0 instance(s) submitted in 0 sbatch call(s)"), "{t}");
    assert_eq!(p.computed(), vec!["a[N=1]", "a[N=2]", "a[N=3]", "b[N=1]", "b[N=2]", "b[N=3]"], "{t}");
}

#[test]
fn a_sweep_of_50_is_submitted_as_arrays() {
    if !slurm_ready("a_sweep_of_50_is_submitted_as_arrays") {
        return;
    }
    let p = Project::new();
    let values: Vec<String> = (0..50).map(|i| format!("\"{i}\"")).collect();
    p.write(
        "pipelines/sweep.toml",
        &format!(
            r#"
[stage.gen]
kind = "command"
cmd = ["sh", "-c", "sleep 2; echo $N > n.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["n.txt"]
matrix.env.N = [{}]

[stage.sq]
kind = "command"
input = "gen"
cmd = ["sh", "-c", "n=$(cat $WFPIPE_INPUT/n.txt); echo $((n*n)) > sq.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["sq.txt"]
"#,
            values.join(", ")
        ),
    );
    let (path, calls) = counting_sbatch(p.path());
    let o = p.cmd(&slurm_args(&["run", "pipelines/sweep.toml", "--slurm-array-limit", "20"])).env("PATH", &path).output().unwrap();
    assert_ok(&o);
    let n = count_lines(&calls);
    let _ = writeln!(std::io::stderr(), "measured: 50-instance sweep + 50-instance fan-out (array limit 20): {n} sbatch calls for 100 instances");
    // 50 = 20 + 20 + 10 per stage; the fan-out waits task-by-task (aftercorr).
    assert_eq!(n, 6, "{}", std::fs::read_to_string(&calls).unwrap());
    let all = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(all.matches("--array=0-19").count(), 4, "{all}");
    assert_eq!(all.matches("aftercorr").count(), 3, "{all}");
    assert_eq!(p.computed().len(), 100);
    let e = entries(&p.cache());
    assert!(e.values().any(|f| f.get("sq.txt").is_some_and(|b| b == b"2401\n")), "49*49 is missing");
}

#[test]
fn packed_instances_share_worker_jobs() {
    if !slurm_ready("packed_instances_share_worker_jobs") {
        return;
    }
    let p = Project::new();
    let values: Vec<String> = (0..12).map(|i| format!("\"{i}\"")).collect();
    p.write(
        "pipelines/many.toml",
        &format!(
            r#"
[executor.slurm]
pack = 6

[stage.tiny]
kind = "command"
cmd = ["sh", "-c", "echo $N > n.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["n.txt"]
matrix.env.N = [{}]

[stage.sum]
kind = "command"
deps = ["tiny"]
cmd = ["sh", "-c", "s=0; for d in $(echo $WFPIPE_DEPS | tr ':' ' '); do s=$((s + $(cat $d/n.txt))); done; echo $s > sum.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["sum.txt"]
"#,
            values.join(", ")
        ),
    );
    let (path, calls) = counting_sbatch(p.path());
    let o = p.cmd(&slurm_args(&["run", "pipelines/many.toml"])).env("PATH", &path).output().unwrap();
    assert_ok(&o);
    let t = text(&o);
    let n = count_lines(&calls);
    assert_eq!(n, 1, "13 instances in one worker array: {}", std::fs::read_to_string(&calls).unwrap());
    assert!(std::fs::read_to_string(&calls).unwrap().contains("--array=0-2"), "13 keys / 6 per worker = 3 workers");
    assert_eq!(p.computed().len(), 13, "{t}");
    let e = entries(&p.cache());
    assert!(e.values().any(|f| f.get("sum.txt").is_some_and(|b| b == b"66\n")), "{t}");
}

/// End-to-end overhead of the SLURM executor over the local one, same pipeline, same
/// machine. Prints the figures; asserts nothing about time.
#[test]
#[ignore]
fn measure_latency_overhead_over_local() {
    if !slurm_ready("measure_latency_overhead_over_local") {
        return;
    }
    let reps = 3;
    let mut local = Vec::new();
    let mut slurm = Vec::new();
    for _ in 0..reps {
        let p = Project::new();
        p.write("pipelines/demo.toml", SWEEP);
        let t = Instant::now();
        assert_ok(&p.run(&["run", "pipelines/demo.toml", "-q"]));
        local.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let o = p.cmd(&slurm_args(&["run", "pipelines/demo.toml", "-q"])).env("WFPIPE_CACHE", p.path().join("c2")).output().unwrap();
        assert_ok(&o);
        slurm.push(t.elapsed().as_secs_f64());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let _ = writeln!(
        std::io::stderr(),
        "measured: 7-instance pipeline (3 sweep, 3 fan-out, 1 gather): local {:.2} s, slurm {:.2} s, overhead {:.2} s (mean of {reps}; local {local:.2?}, slurm {slurm:.2?})",
        mean(&local),
        mean(&slurm),
        mean(&slurm) - mean(&local)
    );
}
