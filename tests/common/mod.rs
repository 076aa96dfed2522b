//! Helpers for end-to-end tests: a temporary project, the wfpipe binary, counters.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Project {
    pub dir: wfpipe::scratch::ScratchDir,
}

impl Project {
    pub fn new() -> Project {
        Project { dir: wfpipe::scratch::ScratchDir::new("test").expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn counter(&self) -> PathBuf {
        self.dir.path().join("counter.txt")
    }

    /// `wfpipe ARGS` with the project's cache and counter.
    pub fn cmd(&self, args: &[&str]) -> Command {
        // WFPIPE_TEST_BIN: a copy of the binary, for target folders that other checkouts share.
        let bin = std::env::var_os("WFPIPE_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_wfpipe").into());
        let mut c = Command::new(bin);
        c.args(args).current_dir(self.path()).env("WFPIPE_CACHE", self.cache()).env("COUNTER", self.counter()).env_remove("WFPIPE_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("wfpipe runs")
    }

    /// Lines appended by command stages to $COUNTER, sorted.
    pub fn computed(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(self.counter())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    pub fn clear_counter(&self) {
        let _ = std::fs::remove_file(self.counter());
    }
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "wfpipe failed ({:?}):\n{}", o.status, text(o));
}

/// A pipeline of command stages with a 3-way sweep, a fan-out and a gather.
pub const SWEEP: &str = r#"
[pipeline]
name = "demo"
seed = 1

[stage.gen]
kind = "command"
cmd = ["sh", "-c", "echo gen $N $WFPIPE_SEED > out.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["out.txt"]
matrix.env.N = ["1", "2", "3"]

[stage.shout]
kind = "command"
input = "gen"
cmd = ["sh", "-c", "tr a-z A-Z < $WFPIPE_INPUT/out.txt > loud.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["loud.txt"]
env = { STYLE = "upper" }

[stage.join]
kind = "command"
deps = ["shout"]
cmd = ["sh", "-c", "for d in $(echo $WFPIPE_DEPS | tr ':' ' '); do cat $d/loud.txt; done > all.txt; echo $WFPIPE_INSTANCE >> $COUNTER"]
outputs = ["all.txt"]
"#;

/// Overwrite a file of a (read-only) cache entry, as a corruption or a hand edit would.
pub fn tamper(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every file below `dir` (none if it does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
