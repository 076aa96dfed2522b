//! `plan`, `status` and `why`: what would run, and why.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::cache::{lock, Cache};
use crate::pipeline::Pipeline;
use crate::stale::{self, Status};

pub struct PlannedInstance {
    pub index: usize,
    pub status: Status,
}

/// Status of every instance, in topological order.
pub fn plan(p: &Pipeline, cache: &Cache) -> Vec<PlannedInstance> {
    p.instances.iter().enumerate().map(|(index, inst)| PlannedInstance { index, status: stale::status(p, inst, cache) }).collect()
}

pub fn format_flops(f: f64) -> String {
    let units = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        if f >= scale {
            return format!("{:.2} {unit}FLOP", f / scale);
        }
    }
    format!("{f:.0} FLOP")
}

/// Instances and estimated FLOPs per kind.
fn per_kind(p: &Pipeline) -> BTreeMap<&str, (usize, f64)> {
    let mut per_kind: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for inst in &p.instances {
        let e = per_kind.entry(&inst.spec.kind).or_default();
        e.0 += 1;
        e.1 += inst.flops.unwrap_or(0.0);
    }
    per_kind
}

/// The text of `wfpipe plan`.
pub fn render_plan(p: &Pipeline, planned: &[PlannedInstance]) -> String {
    let mut out = String::new();
    let width = p.instances.iter().map(|i| i.id.len()).max().unwrap_or(10).min(70);
    let to_run = planned.iter().filter(|x| !x.status.is_cached()).count();
    let _ = writeln!(out, "pipeline `{}`: {} instances, {} cached, {} to run", p.name, planned.len(), planned.len() - to_run, to_run);
    for x in planned {
        let inst = &p.instances[x.index];
        let r = inst.resources;
        let mut res = format!("cpus={} mem={}M", r.cpus, r.mem_mb);
        if r.gpus > 0 {
            res.push_str(&format!(" gpus={}", r.gpus));
        }
        let flops = inst.flops.map(format_flops).unwrap_or_default();
        let state = if x.status.is_cached() { "cached" } else { "run" };
        let _ = writeln!(out, "  {state:<6} {:<width$}  {}  {res:<22} {flops:>12}  {}", inst.id, &inst.key[..12], x.status.reason());
    }
    let per_kind = per_kind(p);
    let _ = writeln!(out, "\nper kind:");
    for (kind, (n, f)) in per_kind {
        let f = if f > 0.0 { format_flops(f) } else { "-".into() };
        let _ = writeln!(out, "  {kind:<14} {n:>6} instances  {f:>14}");
    }
    let devices = Devices::detect(p);
    let cuda = match &devices.cuda {
        Ok(n) => format!("CUDA sees {n}"),
        Err(e) => format!("CUDA unavailable: {e}"),
    };
    let _ = writeln!(out, "\ndevices: {} GPUs as /dev/nvidia* files; {cuda}", devices.gpu_files);
    let _ = writeln!(
        out,
        "  {} instances request a GPU (`resources.gpus`): with `--backend cuda` they run on CUDA, one GPU each at a time; otherwise on the CPU",
        devices.gpu_instances
    );
    out
}

/// The GPUs the local scheduler would hand out, and the instances that would take them.
struct Devices {
    gpu_files: u32,
    /// The devices the CUDA driver reports, or why CUDA cannot run here.
    cuda: Result<usize, String>,
    gpu_instances: usize,
}

impl Devices {
    fn detect(p: &Pipeline) -> Devices {
        Devices {
            gpu_files: crate::machine::gpu_device_files(),
            cuda: wfpipe_stages::backend::cuda_devices(),
            gpu_instances: p.instances.iter().filter(|i| i.resources.gpus > 0).count(),
        }
    }
}

/// What `wfpipe status` shows: counts, plus running, queued and failed instances.
#[derive(serde::Serialize)]
pub struct StatusView {
    pub pipeline: String,
    pub instances: usize,
    pub cached: usize,
    pub not_run: usize,
    /// Instance id and its progress note.
    pub running: Vec<(String, Option<String>)>,
    /// Instance id and its SLURM job.
    pub queued: Vec<(String, String)>,
    pub failed: Vec<Failed>,
    /// The claims' verdict counts, when the pipeline has claims.
    pub verdicts: Option<String>,
}

#[derive(serde::Serialize)]
pub struct Failed {
    pub instance: String,
    pub message: String,
    pub log: String,
}

pub fn status_view(p: &Pipeline, cache: &Cache) -> StatusView {
    use crate::executor::slurm::status::{queue_view, Live};
    let mut v = StatusView {
        pipeline: p.name.clone(),
        instances: p.instances.len(),
        cached: 0,
        not_run: 0,
        running: Vec::new(),
        queued: Vec::new(),
        failed: Vec::new(),
        verdicts: None,
    };
    let mut slurm_failed = Vec::new();
    // Keys submitted to SLURM (`slurm.json`): the queue knows whether they wait or run.
    let slurm = queue_view(p, cache);
    let log = |key: &str| cache.work(key).log().display().to_string();
    for inst in &p.instances {
        let live = slurm.get(&inst.key);
        if cache.is_cached(&inst.key) {
            v.cached += 1;
        } else if lock::is_locked(&cache.lock_path(&inst.key)) || matches!(live, Some(Live::Running { .. })) {
            v.running.push((inst.id.clone(), crate::executor::slurm::status::progress_note(cache, &inst.key)));
        } else if let Some(Live::Queued { job }) = live {
            v.queued.push((inst.id.clone(), job.to_string()));
        } else if cache.work(&inst.key).error().exists() {
            let message = std::fs::read_to_string(cache.work(&inst.key).error()).unwrap_or_default().trim().to_owned();
            v.failed.push(Failed { instance: inst.id.clone(), message, log: log(&inst.key) });
        } else if let Some(Live::Ended { job, message }) = live {
            slurm_failed.push(Failed { instance: inst.id.clone(), message: format!("SLURM job {job}: {message}"), log: log(&inst.key) });
        } else {
            v.not_run += 1;
        }
    }
    // SLURM failures first, as the queue reported them.
    slurm_failed.append(&mut v.failed);
    v.failed = slurm_failed;
    if crate::ops::verdicts::has_claims(p) {
        v.verdicts = Some(crate::ops::verdicts::counts(&crate::ops::verdicts::collect(p, cache)));
    }
    v
}

/// The text of `wfpipe status`.
pub fn render_status(v: &StatusView) -> String {
    let queued_note = if v.queued.is_empty() { String::new() } else { format!(" {} queued,", v.queued.len()) };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline `{}`: {} instances: {} cached, {} running,{queued_note} {} failed, {} not run",
        v.pipeline,
        v.instances,
        v.cached,
        v.running.len(),
        v.failed.len(),
        v.not_run
    );
    if let Some(verdicts) = &v.verdicts {
        let _ = writeln!(out, "  {verdicts}");
    }
    for (id, note) in &v.running {
        let note = note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        let _ = writeln!(out, "  running  {id}{note}");
    }
    for (id, job) in &v.queued {
        let _ = writeln!(out, "  queued   {id} (SLURM job {job})");
    }
    for f in &v.failed {
        let _ = writeln!(out, "  failed   {}: {}\n           log: {}", f.instance, f.message, f.log);
    }
    out
}

/// `wfpipe plan --format json`: one document with every instance and the totals per kind.
pub fn render_plan_json(p: &Pipeline, planned: &[PlannedInstance]) -> String {
    use serde_json::json;
    let instances: Vec<_> = planned
        .iter()
        .map(|x| {
            let inst = &p.instances[x.index];
            json!({
                "id": inst.id,
                "stage": p.stages[inst.stage].name,
                "kind": inst.spec.kind,
                "key": inst.key,
                "cached": x.status.is_cached(),
                "reason": x.status.reason(),
                "axes": inst.spec.axes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect::<BTreeMap<_, _>>(),
                "resources": { "cpus": inst.resources.cpus, "gpus": inst.resources.gpus, "mem_mb": inst.resources.mem_mb },
                "flops": inst.flops,
            })
        })
        .collect();
    let per_kind: BTreeMap<_, _> = per_kind(p).into_iter().map(|(k, (n, f))| (k, json!({ "instances": n, "flops": f }))).collect();
    let devices = Devices::detect(p);
    let cuda = match devices.cuda {
        Ok(n) => json!({ "devices": n }),
        Err(e) => json!({ "devices": 0, "unavailable": e }),
    };
    let devices = json!({ "gpu_files": devices.gpu_files, "cuda": cuda, "gpu_instances": devices.gpu_instances });
    let doc = json!({ "pipeline": p.name, "instances": instances, "per_kind": per_kind, "devices": devices });
    format!("{}\n", serde_json::to_string_pretty(&doc).expect("plain JSON values"))
}

/// The text of `wfpipe why INSTANCE`.
pub fn render_why(p: &Pipeline, cache: &Cache, instance: &str) -> anyhow::Result<String> {
    let named = p.named_by(instance);
    let exact = p.instances.iter().find(|i| i.id == instance);
    if let (None, [_, _, ..]) = (exact, named.as_slice()) {
        // A stage or selection with several instances: list them, each with its state.
        let mut out = format!("`{instance}` names {} instances:\n", named.len());
        for &n in &named {
            let i = &p.instances[n];
            let state = match stale::status(p, i, cache) {
                Status::Cached => "cached",
                Status::New => "will run: new",
                Status::Missing => "will run: entry gone",
                Status::Changed { .. } => "will run: changed",
            };
            let _ = writeln!(out, "  {}  {state}", i.id);
        }
        let _ = writeln!(out, "`wfpipe why {} '<instance>'` explains one of them", p.path.display());
        return Ok(out);
    }
    let Some(inst) = exact.or(named.first().map(|&n| &p.instances[n])) else {
        let names: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
        let hint = crate::pipeline::diagnostic::closest(instance, names.iter().copied())
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        anyhow::bail!("no instance `{instance}` in pipeline `{}`{hint}", p.name);
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}  (kind {} v{}, key {})", inst.id, inst.spec.kind, inst.spec.version, inst.key);
    match stale::status(p, inst, cache) {
        Status::Cached => {
            let _ = writeln!(out, "cached: nothing to do");
        }
        Status::New => {
            let _ = writeln!(out, "will run: never computed under this name");
        }
        Status::Missing => {
            let _ = writeln!(out, "will run: computed before with this key, but the entry is gone (removed or quarantined)");
        }
        Status::Changed { previous_key, changes } => {
            let _ = writeln!(out, "will run: differs from the last computed key {previous_key}:");
            for c in &changes {
                let _ = writeln!(out, "  - {c}");
            }
            if changes.is_empty() {
                let _ = writeln!(out, "  - the key encoding changed");
            }
        }
    }
    let _ = writeln!(out, "parameters:");
    for (k, v) in &inst.spec.params.0 {
        let _ = writeln!(out, "  {k} = {v}");
    }
    for (param, ups) in &inst.inputs {
        for &u in ups {
            let up = &p.instances[u];
            let state = if cache.is_cached(&up.key) { "cached" } else { "to run" };
            let _ = writeln!(out, "input {param}: {} ({state})", up.id);
        }
    }
    Ok(out)
}
