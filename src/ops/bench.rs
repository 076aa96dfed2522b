//! `wfpipe bench plan`: how long planning and status take on a generated pipeline of
//! many instances (a benchmark, reported as figures, never asserted in tests).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use crate::cache::{manifest::FORMAT, Cache, Manifest};
use crate::kinds::Registry;
use crate::pipeline;

/// A pipeline of `instances` command instances: a swept stage and a fan-out over it.
pub fn generated_pipeline(instances: usize) -> String {
    let half = (instances / 2).max(1);
    let a = (half as f64).sqrt().ceil() as usize;
    let b = half.div_ceil(a);
    let list = |n: usize| (0..n).map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[pipeline]\nname = \"bench\"\n\n[stage.gen]\nkind = \"command\"\ncmd = [\"true\"]\nmatrix.env.A = [{}]\nmatrix.env.B = [{}]\n\n[stage.use]\nkind = \"command\"\ninput = \"gen\"\ncmd = [\"true\"]\n",
        list(a),
        list(b)
    )
}

/// One stage swept over `sizes.len()` axes (a cartesian product of that many values each):
/// `[100000]` is one axis of 100,000 values, `[100, 100, 10]` a 100x100x10 matrix.
pub fn generated_sweep(sizes: &[usize]) -> String {
    let mut text = String::from("[pipeline]\nname = \"bench\"\n\n[stage.gen]\nkind = \"command\"\ncmd = [\"true\"]\n");
    for (i, &n) in sizes.iter().enumerate() {
        let values = (0..n).map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(text, "matrix.env.A{i} = [{values}]");
    }
    text
}

/// The process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Time load, plan and status on a generated pipeline: `sizes` sweeps one stage over those
/// axes ([`generated_sweep`]); without them, `instances` split between a swept stage and a
/// fan-out over it ([`generated_pipeline`]).
pub fn bench_plan(instances: usize, sizes: &[usize], reps: usize, workdir: &Path) -> anyhow::Result<String> {
    let registry = Registry::standard();
    let path = workdir.join("bench.toml");
    let text = if sizes.is_empty() { generated_pipeline(instances) } else { generated_sweep(sizes) };
    std::fs::write(&path, text)?;
    let cache = Cache::open(&workdir.join("cache"))?;
    let mut load_s = Vec::new();
    let mut plan_s = Vec::new();
    let mut n = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let p = pipeline::load(&path, &[], &registry)?;
        let loaded = t.elapsed().as_secs_f64();
        let planned = super::plan::plan(&p, &cache);
        let text = super::plan::render_plan(&p, &planned);
        plan_s.push(t.elapsed().as_secs_f64());
        load_s.push(loaded);
        n = p.instances.len();
        std::hint::black_box(text);
    }
    // Mark everything cached with manifests (no outputs), then time `status`.
    let p = pipeline::load(&path, &[], &registry)?;
    for inst in &p.instances {
        if cache.is_cached(&inst.key) {
            continue;
        }
        let dir = cache.entry_dir(&inst.key);
        std::fs::create_dir_all(dir.join("out"))?;
        let m = Manifest {
            format: FORMAT.into(),
            key: inst.key.clone(),
            instance: inst.id.clone(),
            pipeline: p.name.clone(),
            spec: inst.spec.clone(),
            outputs: Vec::new(),
            tables: Vec::new(),
            metrics: BTreeMap::new(),
            started_unix: 0.0,
            duration_s: 0.0,
            backend: "cpu".into(),
            threads: 1,
            host: "bench".into(),
            wfpipe_version: env!("CARGO_PKG_VERSION").into(),
        };
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m)?)?;
    }
    let mut status_s = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let p = pipeline::load(&path, &[], &registry)?;
        let text = super::plan::render_status(&super::plan::status_view(&p, &cache));
        status_s.push(t.elapsed().as_secs_f64());
        std::hint::black_box(text);
    }
    let mut out = String::new();
    let _ = writeln!(out, "generated pipeline: {n} instances, {reps} repetitions (median)");
    let _ = writeln!(out, "  load (parse, expand, key)  {:>8.3} s", median(load_s));
    let _ = writeln!(out, "  plan (load + status of each, uncached) {:>8.3} s", median(plan_s));
    let _ = writeln!(out, "  status (load + all cached) {:>8.3} s", median(status_s));
    if let Some(mb) = peak_rss_mb() {
        let _ = writeln!(out, "  peak RSS of the process    {mb:>8.0} MB");
    }
    Ok(out)
}
