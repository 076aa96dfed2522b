//! Reduced-scale reproductions of the toy (docs/science.md §8.7) and UCI (§9.1) flow experiments,
//! driven through the `train-flow` and `sample` stage kinds exactly as a pipeline would.
//!
//! `cargo run -p wfpipe-stages --example flow_experiments -- toy [key=value ...]`
//! `cargo run -p wfpipe-stages --example flow_experiments -- uci [key=value ...]`
//! `cargo run -p wfpipe-stages --example flow_experiments -- resample from=<uci work> [key=value ...]`
//!
//! Keys: iterations, lr, lr_schedule, warmup, time_channel, d_model, layers, batch_size, samples, steps, runs (UCI collection
//! runs), geometries (comma list), work (output folder).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wfpipe_stages::align::weight_matching::weight_matching;
use wfpipe_stages::geometry::canon::canonicalize_row;
use wfpipe_stages::data::uci;
use wfpipe_stages::kind::{BackendChoice, InputArtifact, Params, ProgressSink, StageContext, StageKind, Value};
use wfpipe_stages::kinds::{sample::Sample, train_flow::TrainFlow};
use wfpipe_stages::layout::Layout;
use wfpipe_stages::mlp::eval::{evaluate, EVAL_BATCH};
use wfpipe_stages::mlp::grad::Workspace;
use wfpipe_stages::mlp::model::MlpConfig;
use wfpipe_stages::mlp::optim::OptimizerConfig;
use wfpipe_stages::mlp::train::{train, RecordRule, TrainConfig};
use wfpipe_stages::rng;
use wfpipe_stages::weights::{WeightSet, FILE_NAME};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Printer {
    every: u64,
}

impl ProgressSink for Printer {
    fn progress(&self, step: u64, total: u64, unit: &str) {
        if step % self.every == 0 || step == total {
            eprintln!("  {step}/{total} {unit}");
        }
    }
    fn metric(&self, _: &str, _: f64) {}
}

fn params(kind: &dyn StageKind, overrides: &[(&str, Value)]) -> Params {
    let mut map: BTreeMap<String, Value> =
        kind.params().into_iter().filter_map(|s| s.default.map(|d| (s.name.to_owned(), d))).collect();
    for (k, v) in overrides {
        map.insert((*k).to_owned(), v.clone());
    }
    Params(map)
}

/// Runs a kind in `dir/out` with one fan-out input.
fn run_kind(kind: &dyn StageKind, params: &Params, input: (&str, InputArtifact), dir: &Path, seed: u64) -> PathBuf {
    let out = dir.join("out");
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&out).expect("output folder");
    std::fs::create_dir_all(&scratch).expect("scratch folder");
    let inputs = BTreeMap::from([(input.0.to_owned(), vec![input.1])]);
    let axes = BTreeMap::new();
    let printer = Printer { every: 50 };
    let mut ctx = StageContext {
        params,
        inputs: &inputs,
        axes: &axes,
        out_dir: &out,
        scratch_dir: &scratch,
        project_dir: dir,
        data_dir: dir,
        seed,
        threads: rayon::current_num_threads(),
        backend: BackendChoice::Cpu,
        progress: &printer,
        tables: BTreeMap::new(),
    };
    if let Err(e) = kind.run(&mut ctx) {
        panic!("{} failed: {e}", kind.name());
    }
    if let Some(curve) = ctx.tables.get("curve") {
        let losses: Vec<String> = curve.iter().map(|r| format!("{}", r["loss"])).collect();
        eprintln!("  curve: {}", losses.join(" "));
    }
    if let Some(profile) = ctx.tables.get("loss_by_time") {
        for row in profile {
            eprintln!("  t={} loss={} mean-predictor={}", row["t"], row["loss"], row["mean_predictor_loss"]);
        }
    }
    out
}

/// Samples the trained flow in `flow` into `dir` with the sample kind's defaults and
/// `overrides`.
fn sample_flow(flow: &Path, overrides: &[(&str, Value)], dir: &Path) -> WeightSet {
    let sample_kind = Sample;
    let mut all = vec![("flow", Value::Str("flow".into()))];
    all.extend(overrides.iter().cloned());
    let p = params(&sample_kind, &all);
    let out = run_kind(&sample_kind, &p, ("flow", artifact("train-flow", flow)), dir, 1);
    WeightSet::read(&out.join(FILE_NAME)).expect("samples")
}

fn artifact(kind: &str, dir: &Path) -> InputArtifact {
    InputArtifact {
        instance: kind.to_owned(),
        kind: kind.to_owned(),
        axes: BTreeMap::new(),
        key: kind.to_owned(),
        dir: dir.to_path_buf(),
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

struct Args(BTreeMap<String, String>);

impl Args {
    fn get(&self, key: &str, default: &str) -> String {
        self.0.get(key).cloned().unwrap_or_else(|| default.to_owned())
    }
    fn int(&self, key: &str, default: i64) -> i64 {
        self.get(key, &default.to_string()).parse().expect("integer argument")
    }
    fn float(&self, key: &str, default: f64) -> f64 {
        self.get(key, &default.to_string()).parse().expect("number argument")
    }
}

fn toy(args: &Args, work: &Path) {
    let toy_dir = work.join("toy-data");
    std::fs::create_dir_all(&toy_dir).expect("toy folder");
    let train_kind = TrainFlow;
    let p = params(
        &train_kind,
        &[
            ("weights", Value::Str("toy".into())),
            ("iterations", Value::Int(args.int("iterations", 300))),
            ("lr", Value::Float(args.float("lr", 1e-3))),
            ("lr_schedule", Value::Str(args.get("lr_schedule", "constant"))),
            ("warmup", Value::Int(args.int("warmup", 0))),
            ("ema", Value::Float(args.float("ema", 0.0))),
            ("batch_size", Value::Int(args.int("batch_size", 16))),
            ("sigma", Value::Float(1e-3)),
            ("d_model", Value::Int(args.int("d_model", 16))),
            ("layers", Value::Int(args.int("layers", 2))),
            ("source", Value::Str("fresh".into())),
            ("source_std", Value::Float(1.0)),
            ("checkpoint_every", Value::Int(100)),
            ("curve_every", Value::Int(25)),
        ],
    );
    let start = Instant::now();
    let flow = run_kind(&train_kind, &p, ("weights", artifact("toy-data", &toy_dir)), &work.join("toy-flow"), 0);
    eprintln!("toy flow trained in {:.0} s", start.elapsed().as_secs_f64());
    for noise in [0.0, 0.05] {
        let start = Instant::now();
        let set = sample_flow(
            &flow,
            &[
                ("count", Value::Int(args.int("samples", 64))),
                ("steps", Value::Int(args.int("steps", 100))),
                ("noise_scale", Value::Float(noise)),
            ],
            &work.join(format!("toy-samples-{noise}")),
        );
        let means: Vec<f64> = set.rows().map(|r| r.iter().map(|&v| v as f64).sum::<f64>() / r.len() as f64).collect();
        let coords: Vec<f64> = set.data.iter().map(|&v| v as f64).collect();
        let (m, s) = mean_std(&means);
        let (_, coord_std) = mean_std(&coords);
        println!(
            "toy noise={noise}: {} samples in {:.0} s; per-sample coordinate mean {m:.4} ± {s:.4} (target N(1, 1/802): ± 0.0353); coordinate std {coord_std:.3} (target 1)",
            set.count,
            start.elapsed().as_secs_f64()
        );
    }
}

/// A UCI weight set (docs/science.md §2.2 at a reduced run count), aligned to stored index 256
/// by weight matching; returned raw-aligned and canonicalized, and written under `work`.
fn uci_weights(runs: usize, work: &Path) -> (WeightSet, WeightSet) {
    let layout = Layout(vec![30, 16, 16, 2]);
    let data = uci::load(0);
    let config = TrainConfig { epochs: 50, batch_size: 64, optimizer: OptimizerConfig::adam(1e-3) };
    let rule = RecordRule { skip_epochs: 10, every: 4 };
    let mut rows: Vec<f32> = Vec::new();
    for run in 0..runs {
        let mut rng = rng::stream(0, "uci-collect", run as u64);
        let mut theta = MlpConfig::new(layout.clone()).init(&mut rng);
        train(&layout, &mut theta, &data.train, &config, Some(rule), &mut rng, |_, _, w| rows.extend_from_slice(w))
            .expect("base training");
    }
    let raw = WeightSet::new(layout.clone(), rows).expect("weight set");
    let reference = raw.row(256.min(raw.count - 1)).to_vec();
    let mut aligned_rows = Vec::with_capacity(raw.data.len());
    for (i, theta) in raw.rows().enumerate() {
        let mut rng = rng::stream(0, "uci-align", i as u64);
        let matching = weight_matching(&layout, &reference, theta, &mut rng);
        aligned_rows.extend(matching.perms.apply(&layout, theta));
    }
    let mut aligned = WeightSet::new(layout.clone(), aligned_rows).expect("aligned set");
    aligned.is_aligned = true;
    let mut canonical = aligned.clone();
    for row in canonical.rows_mut() {
        canonicalize_row(&layout, row, 1.0);
    }
    canonical.is_canonical = true;
    for (name, set) in [("uci-aligned", &aligned), ("uci-canonical", &canonical)] {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).expect("weights folder");
        set.write(&dir.join(FILE_NAME)).expect("write weights");
    }
    (aligned, canonical)
}

fn report(name: &str, set: &WeightSet, test: &wfpipe_stages::data::Split) {
    let mut ws = Workspace::default();
    let metrics: Vec<_> = set.rows().map(|r| evaluate(&set.layout, r, test, EVAL_BATCH, &mut ws)).collect();
    let (acc, acc_sd) = mean_std(&metrics.iter().map(|m| m.accuracy).collect::<Vec<_>>());
    let (loss, loss_sd) = mean_std(&metrics.iter().map(|m| m.loss).collect::<Vec<_>>());
    println!("{name}: test accuracy {acc:.3} ± {acc_sd:.3}, loss {loss:.3} ± {loss_sd:.3} ({} networks)", set.count);
}

fn uci(args: &Args, work: &Path) {
    let start = Instant::now();
    let (aligned, _canonical) = uci_weights(args.int("runs", 20) as usize, work);
    eprintln!("UCI weights: {} networks in {:.0} s", aligned.count, start.elapsed().as_secs_f64());
    let test = uci::load(0).test;
    let pick: Vec<usize> = (0..aligned.count).step_by((aligned.count / 64).max(1)).take(64).collect();
    report("target (aligned, raw)", &aligned.select(&pick).expect("subset"), &test);
    for geometry in args.get("geometries", "euclidean,normalized,geometric").split(',') {
        let train_kind = TrainFlow;
        let input = if geometry == "euclidean" { "uci-aligned" } else { "uci-canonical" };
        let p = params(
            &train_kind,
            &[
                ("weights", Value::Str(input.into())),
                ("geometry", Value::Str(geometry.into())),
                ("iterations", Value::Int(args.int("iterations", 300))),
                ("lr", Value::Float(args.float("lr", 1e-3))),
                ("lr_schedule", Value::Str(args.get("lr_schedule", "constant"))),
                ("warmup", Value::Int(args.int("warmup", 0))),
                ("ema", Value::Float(args.float("ema", 0.0))),
                ("batch_size", Value::Int(args.int("batch_size", 16))),
                ("sigma", Value::Float(1e-4)),
                ("d_model", Value::Int(args.int("d_model", 16))),
                ("layers", Value::Int(args.int("layers", 2))),
                ("time_channel", Value::Str(args.get("time_channel", "faithful"))),
                ("checkpoint_every", Value::Int(100)),
                ("curve_every", Value::Int(25)),
            ],
        );
        let start = Instant::now();
        let flow = run_kind(
            &train_kind,
            &p,
            ("weights", artifact("align", &work.join(input))),
            &work.join(format!("uci-flow-{geometry}")),
            0,
        );
        let trained = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let set = sample_flow(
            &flow,
            &[("count", Value::Int(args.int("samples", 64))), ("steps", Value::Int(args.int("steps", 64)))],
            &work.join(format!("uci-samples-{geometry}")),
        );
        eprintln!("{geometry}: trained in {trained:.0} s, sampled in {:.0} s", start.elapsed().as_secs_f64());
        report(&format!("{geometry} flow samples"), &set, &test);
    }
}

/// Samples flows trained by an earlier `uci` run (under `from`) again, with every velocity
/// rule: sampling is cheap, training is not.
fn resample(args: &Args, work: &Path) {
    let from = PathBuf::from(args.get("from", "/tmp/wfpipe-flow-experiments"));
    let test = uci::load(0).test;
    for geometry in args.get("geometries", "euclidean,normalized,geometric").split(',') {
        let flow = from.join(format!("uci-flow-{geometry}")).join("out");
        if !flow.exists() {
            continue;
        }
        for rule in ["x1-minus-x0", "denoiser"] {
            let set = sample_flow(
                &flow,
                &[
                    ("count", Value::Int(args.int("samples", 64))),
                    ("steps", Value::Int(args.int("steps", 64))),
                    ("velocity_rule", Value::Str(rule.into())),
                ],
                &work.join(format!("uci-samples-{geometry}-{rule}")),
            );
            report(&format!("{geometry} flow samples, {rule}"), &set, &test);
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let which = argv.first().cloned().unwrap_or_else(|| "toy".to_owned());
    let args = Args(
        argv.iter().skip(1).filter_map(|a| a.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
    );
    let work =
        PathBuf::from(args.get("work", &std::env::temp_dir().join("wfpipe-flow-experiments").display().to_string()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work folder");
    match which.as_str() {
        "toy" => toy(&args, &work),
        "uci" => uci(&args, &work),
        "resample" => resample(&args, &work),
        other => eprintln!("unknown experiment `{other}`; use toy or uci"),
    }
}
