//! Run one stage kind directly, without the orchestrator: a hand-built `StageContext`.
//!
//! ```text
//! cargo run --release -p wfpipe-stages --example run_stage -- KIND OUT_DIR \
//!     [--seed N] [--threads N] [--data-dir DIR] [--input PARAM=DIR]... [--set PARAM=JSON]...
//! ```
//! `--set` values are JSON (`--set runs=50`, `--set layout=[784,10,10]`,
//! `--set 'dataset="mnist"'`); a bare word is taken as a string (`--set dataset=mnist`).
//! `--input weights=DIR` points a reference parameter at a finished stage's output folder.
//! Tables are written as `OUT_DIR/<table>.jsonl`, the wall time to `OUT_DIR/timing.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wfpipe_stages::kind::{InputArtifact, ParamType, Params, ProgressSink, StageContext, Value};

struct StderrProgress {
    start: Instant,
}

impl ProgressSink for StderrProgress {
    fn progress(&self, step: u64, total: u64, unit: &str) {
        eprintln!("[{:8.1}s] {step}/{total} {unit}", self.start.elapsed().as_secs_f64());
    }
    fn metric(&self, name: &str, value: f64) {
        eprintln!("[{:8.1}s] {name} = {value}", self.start.elapsed().as_secs_f64());
    }
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::Str(text.to_owned()))
}

/// Integers where a float is expected become floats, as the orchestrator coerces them.
fn coerce(ty: &ParamType, value: Value) -> Value {
    match (ty, value) {
        (ParamType::Float { .. }, Value::Int(i)) => Value::Float(i as f64),
        (_, v) => v,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        fail("usage: run_stage KIND OUT_DIR [--seed N] [--threads N] [--data-dir DIR] [--input PARAM=DIR]... [--set PARAM=JSON]...");
    }
    let kinds = wfpipe_stages::registry();
    let kind = kinds
        .iter()
        .find(|k| k.name() == args[0])
        .unwrap_or_else(|| fail(format!("unknown kind `{}`", args[0])));
    let out_dir = PathBuf::from(&args[1]);
    let (mut seed, mut threads) = (0u64, 1usize);
    let mut data_dir = std::env::var_os("WFPIPE_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"));
    let mut inputs: BTreeMap<String, Vec<InputArtifact>> = BTreeMap::new();
    let specs = kind.params();
    let mut params: BTreeMap<String, Value> =
        specs.iter().filter_map(|s| s.default.clone().map(|d| (s.name.to_owned(), d))).collect();

    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match flag.as_str() {
            "--seed" => seed = value.parse().unwrap_or_else(|_| fail("--seed takes an integer")),
            "--threads" => threads = value.parse().unwrap_or_else(|_| fail("--threads takes an integer")),
            "--data-dir" => data_dir = PathBuf::from(value),
            "--input" | "--set" => {
                let (name, v) = value.split_once('=').unwrap_or_else(|| fail(format!("{flag} takes PARAM=VALUE")));
                let spec = specs.iter().find(|s| s.name == name).unwrap_or_else(|| fail(format!("`{}` has no parameter `{name}`", kind.name())));
                if flag == "--input" {
                    let dir = PathBuf::from(v);
                    inputs.entry(name.to_owned()).or_default().push(InputArtifact {
                        instance: dir.display().to_string(),
                        kind: String::new(),
                        axes: BTreeMap::new(),
                        key: String::new(),
                        dir: dir.clone(),
                    });
                    params.insert(name.to_owned(), Value::Str(dir.display().to_string()));
                } else {
                    params.insert(name.to_owned(), coerce(&spec.ty, parse_value(v)));
                }
            }
            other => fail(format!("unknown flag {other}")),
        }
    }
    if let Some(missing) = specs.iter().find(|s| !params.contains_key(s.name)) {
        fail(format!("parameter `{}` is required ({})", missing.name, missing.doc));
    }
    let params = Params(params);
    if let Err(e) = kind.validate(&params) {
        fail(e);
    }
    let scratch = out_dir.join(".scratch");
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| fail(format!("{}: {e}", out_dir.display())));
    let axes = BTreeMap::new();
    let progress = StderrProgress { start: Instant::now() };
    let mut ctx = StageContext {
        params: &params,
        inputs: &inputs,
        axes: &axes,
        out_dir: &out_dir,
        scratch_dir: &scratch,
        project_dir: Path::new("."),
        data_dir: &data_dir,
        seed,
        threads,
        backend: Default::default(),
        progress: &progress,
        tables: BTreeMap::new(),
    };
    let start = Instant::now();
    if let Err(e) = kind.run(&mut ctx) {
        fail(e);
    }
    let wall = start.elapsed().as_secs_f64();
    for (name, rows) in &ctx.tables {
        let lines: String = rows.iter().map(|r| serde_json::to_string(r).expect("rows serialize") + "\n").collect();
        std::fs::write(out_dir.join(format!("{name}.jsonl")), lines).unwrap_or_else(|e| fail(e));
    }
    let timing = serde_json::json!({ "kind": kind.name(), "seed": seed, "threads": threads, "wall_s": wall });
    std::fs::write(out_dir.join("timing.json"), timing.to_string()).unwrap_or_else(|e| fail(e));
    eprintln!("{} finished in {wall:.1} s", kind.name());
}
