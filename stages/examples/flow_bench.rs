//! Throughput of the relational-transformer flow on this machine: one training step
//! (forward, backward, Adam) and one Euler sampling step, reported as seconds, GFLOP/s with
//! docs/science.md §11.2's FLOP counts (over the kept pairs), and peak memory.
//!
//! Every configuration runs with dense attention (the thesis's model) and with
//! `layer-blocks` (consecutive layers and self pairs) on the fused CPU engine, each in a
//! child process of its own so that its peak RSS is its own; timings come from the same
//! run and the table gives the dense/layer-blocks ratios. Dense MNIST configurations whose
//! tapes would not fit in memory are skipped with their estimated size.
//!
//! `--burn` also times the burn module (`Autodiff<NdArray>`, the reference) against the
//! fused engine on the UCI configurations; it is slow.
//!
//! Run with `cargo run -p wfpipe-stages --example flow_bench [-- --steps N] [--only uci|mnist] [--burn]`.

use std::process::Command;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use wfpipe_stages::backend::Cpu;
use wfpipe_stages::coupling::Coupling;
use wfpipe_stages::flow::train::{FlowModel, FusedFlow};
use wfpipe_stages::flow::{FlowSpec, SourceMode, SourceSpec};
use wfpipe_stages::geometry::Geometry;
use wfpipe_stages::layout::Layout;
use wfpipe_stages::noise::ResumableRng;
use wfpipe_stages::rt::forward_flops;
use wfpipe_stages::rt::fused::{FusedGraph, FusedRt, Tape};
use wfpipe_stages::rt::fused::params::ParamMap;
use wfpipe_stages::rt::graph::{GraphSpec, TimeChannel};
use wfpipe_stages::rt::model::{RelationalTransformer, RtConfig};
use wfpipe_stages::rt::pairs::Attention;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LAYERS: usize = 5;

/// One benchmark configuration.
#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    layout: &'static [usize],
    d: usize,
    batch: usize,
    /// Time the training step (otherwise only the Euler step).
    train: bool,
}

const CONFIGS: &[Config] = &[
    Config { name: "UCI 30-16-16-2 d_E 8 B 16", layout: &[30, 16, 16, 2], d: 8, batch: 16, train: true },
    Config { name: "UCI 30-16-16-2 d_E 64 B 32", layout: &[30, 16, 16, 2], d: 64, batch: 32, train: true },
    Config { name: "MNIST 784-10-10 d_E 8 B 8", layout: &[784, 10, 10], d: 8, batch: 8, train: true },
    Config { name: "MNIST 784-10-10 d_E 16 B 8", layout: &[784, 10, 10], d: 16, batch: 8, train: true },
    Config { name: "MNIST 784-10-10 d_E 32 B 8", layout: &[784, 10, 10], d: 32, batch: 8, train: true },
    Config { name: "MNIST 784-32-10 d_E 8 B 8 (sampling)", layout: &[784, 32, 10], d: 8, batch: 8, train: false },
];

fn spec(config: &Config, attention: Attention) -> FlowSpec {
    let layout = Layout(config.layout.to_vec());
    FlowSpec {
        geometry: Geometry::Euclidean,
        coupling: Coupling::Independent,
        rt: RtConfig::for_layout(&layout, config.d, LAYERS, 1),
        layout,
        time_channel: TimeChannel::Faithful,
        sigma: 1e-4,
        source: SourceSpec { mode: SourceMode::Fresh, std: 0.1, count: 0, seed: 0 },
        output: Default::default(),
        attention,
        positions: Default::default(),
    }
}

/// Bytes the tapes of one training step hold (one per network of the batch) plus its
/// gradients: what decides whether a configuration fits.
fn tape_bytes(config: &Config, attention: Attention) -> usize {
    let spec = spec(config, attention);
    let graph = FusedGraph::new(&spec.graph(&spec.layout));
    let map = ParamMap::new(&spec.rt);
    let per_network = Tape::new(&map, &graph).floats() + 2 * map.len;
    let networks = if config.train { config.batch } else { rayon::current_num_threads() };
    4 * per_network * networks
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn batch_tensors(layout: &Layout, batch: usize, rng: &mut ResumableRng) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = layout.num_params();
    let x = rng.normal_vec(batch * p, 0.0, 0.1);
    let target = rng.normal_vec(batch * p, 0.0, 0.1);
    let t = (0..batch).map(|_| rng.uniform() as f32).collect();
    (x, target, t)
}

/// Seconds per training step (when timed) and per Euler step of the fused engine.
fn bench_fused(config: &Config, attention: Attention, steps: usize) -> (Option<f64>, f64) {
    let spec = spec(config, attention);
    let (layout, batch) = (&spec.layout, config.batch);
    let mut rng = ResumableRng::seed_from(0);
    let per_step = config.train.then(|| {
        let mut flow = FusedFlow::new(&spec, 0);
        let (x, target, t) = batch_tensors(layout, batch, &mut rng);
        flow.step(x, t, target, 1e-3); // warm-up: allocates the per-sample buffers
        let start = Instant::now();
        for _ in 0..steps {
            let (x, target, t) = batch_tensors(layout, batch, &mut rng);
            flow.step(x, t, target, 1e-3);
        }
        start.elapsed().as_secs_f64() / steps as f64
    });
    let model = spec.rt.init::<burn::backend::NdArray<f32>>(0, &Default::default());
    let engine = FusedRt::from_model(&model, &spec.rt);
    let graph = FusedGraph::new(&spec.graph(layout));
    let (x, _, t) = batch_tensors(layout, batch, &mut rng);
    let _ = engine.predict(&graph, &x, &t);
    let start = Instant::now();
    for _ in 0..steps {
        let _ = engine.predict(&graph, &x, &t);
    }
    (per_step, start.elapsed().as_secs_f64() / steps as f64)
}

/// The burn module on `Autodiff<NdArray>` (dense): seconds per training and Euler step.
fn bench_burn(name: &str, layout: &Layout, d: usize, batch: usize, steps: usize) -> (f64, f64) {
    let device = Default::default();
    let layers = LAYERS;
    let config = RtConfig::for_layout(layout, d, layers, 1);
    let mut model: RelationalTransformer<Cpu> = config.init(0, &device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<Cpu, RelationalTransformer<Cpu>>();
    let graph = GraphSpec::new(layout, TimeChannel::Faithful, Attention::Dense);
    let p = layout.num_params();
    let mut rng = ResumableRng::seed_from(0);
    let tensor2 = |v: Vec<f32>| Tensor::<Cpu, 2>::from_data(TensorData::new(v, [batch, p]), &device);
    let tensor1 = |v: Vec<f32>| Tensor::<Cpu, 1>::from_data(TensorData::new(v, [batch]), &device);
    let mut train_step = |model: RelationalTransformer<Cpu>, rng: &mut ResumableRng| {
        let (x, target, t) = batch_tensors(layout, batch, rng);
        let loss = (model.forward(tensor2(x), tensor1(t), &graph) - tensor2(target)).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(1e-3, model, grads)
    };
    model = train_step(model, &mut rng); // warm-up
    let start = Instant::now();
    for _ in 0..steps {
        model = train_step(model, &mut rng);
    }
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    let train_flops = 3.0 * batch as f64 * forward_flops(layout, Attention::Dense, d, layers);
    println!(
        "{name} burn: train step (fwd+bwd+Adam) {:.3} s, {:.2} it/s, {:.1} GFLOP/s (model {:.1} GFLOP/it)",
        per_step,
        1.0 / per_step,
        train_flops / per_step / 1e9,
        train_flops / 1e9
    );

    let inference = model.valid();
    let (x, _, t) = batch_tensors(layout, batch, &mut rng);
    let inner2 = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [batch, p]), &device);
    let inner1 = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [batch]), &device);
    let _ = inference.forward(inner2(x.clone()), inner1(t.clone()), &graph).into_data(); // warm-up
    let start = Instant::now();
    for _ in 0..steps {
        let _ = inference.forward(inner2(x.clone()), inner1(t.clone()), &graph).into_data();
    }
    let per_euler = start.elapsed().as_secs_f64() / steps as f64;
    let fwd = batch as f64 * forward_flops(layout, Attention::Dense, d, layers);
    println!(
        "{name} burn: Euler step for {batch} networks {:.3} s ({:.2} ms per network), {:.1} GFLOP/s",
        per_euler,
        per_euler * 1e3 / batch as f64,
        fwd / per_euler / 1e9
    );
    (per_step, per_euler)
}

/// What a child process measures for one configuration and attention.
struct Measured {
    train: Option<f64>,
    euler: f64,
    rss: Option<usize>,
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok())
}

/// Runs one measurement in a child process (its peak RSS is its own).
fn measure(index: usize, attention: Attention, steps: usize) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let word = Attention::NAMES[attention as usize];
    let out = Command::new(exe)
        .args(["--child", &index.to_string(), word, "--steps", &steps.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RESULT")).ok_or_else(|| {
        format!("the child failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""))
    })?;
    let v: Vec<f64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(f64::NAN)).collect();
    Ok(Measured { train: (v[0] >= 0.0).then_some(v[0]), euler: v[1], rss: (v[2] >= 0.0).then_some(v[2] as usize) })
}

fn child(args: &[String]) {
    let index: usize = args[2].parse().expect("configuration index");
    let attention = Attention::parse(&args[3]).expect("attention");
    let steps = arg(args, "--steps").unwrap_or(3);
    let (train, euler) = bench_fused(&CONFIGS[index], attention, steps);
    let rss = peak_rss().map_or(-1.0, |b| b as f64);
    println!("RESULT {} {euler} {rss}", train.unwrap_or(-1.0));
}

fn gflops(config: &Config, attention: Attention, train: bool, seconds: f64) -> f64 {
    let layout = Layout(config.layout.to_vec());
    let factor = if train { 3.0 } else { 1.0 };
    factor * config.batch as f64 * forward_flops(&layout, attention, config.d, LAYERS) / seconds / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(&args);
    }
    let steps = arg(&args, "--steps").unwrap_or(3);
    let only: Option<String> = arg(&args, "--only");
    // Leave room for the rest of the machine: a dense tape above this is not attempted.
    let budget = arg::<f64>(&args, "--mem-gb").unwrap_or(16.0) * 1e9;
    println!("threads: {}, steps per measurement: {steps}, {LAYERS} RT layers, fused CPU engine", rayon::current_num_threads());
    println!();
    println!("| configuration | pairs dense / layer-blocks | train step dense | train step layer-blocks | ratio | Euler step dense | Euler step layer-blocks | ratio | peak RSS dense | peak RSS layer-blocks |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let fmt_s = |v: Option<f64>| v.map_or("–".to_owned(), |s| format!("{s:.3} s"));
    let fmt_gb = |v: Option<usize>| v.map_or("–".to_owned(), |b| format!("{:.2} GB", b as f64 / 1e9));
    for (index, config) in CONFIGS.iter().enumerate() {
        let family = if config.layout[0] == 784 { "mnist" } else { "uci" };
        if only.as_deref().is_some_and(|o| o != family) {
            continue;
        }
        let layout = Layout(config.layout.to_vec());
        let mut cells = Vec::new();
        for attention in [Attention::Dense, Attention::LayerBlocks] {
            let bytes = tape_bytes(config, attention);
            if bytes as f64 > budget {
                eprintln!("{} {attention:?}: skipped, its tapes need {:.1} GB", config.name, bytes as f64 / 1e9);
                cells.push(None);
                continue;
            }
            match measure(index, attention, steps) {
                Ok(m) => {
                    let train = m.train.map(|s| format!(" ({:.1} GFLOP/s)", gflops(config, attention, true, s))).unwrap_or_default();
                    eprintln!("{} {attention:?}: train {}{train}, Euler {:.3} s ({:.1} GFLOP/s)", config.name, fmt_s(m.train), m.euler, gflops(config, attention, false, m.euler));
                    cells.push(Some(m));
                }
                Err(e) => {
                    eprintln!("{} {attention:?}: {e}", config.name);
                    cells.push(None);
                }
            }
        }
        let (dense, sparse) = (&cells[0], &cells[1]);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.1}x", a / b),
            _ => "–".to_owned(),
        };
        let train = |c: &Option<Measured>| c.as_ref().and_then(|m| m.train);
        let euler = |c: &Option<Measured>| c.as_ref().map(|m| m.euler);
        let rss = |c: &Option<Measured>| c.as_ref().and_then(|m| m.rss);
        let skipped = |c: &Option<Measured>, v: String| if c.is_none() { format!("skipped ({:.0} GB)", tape_bytes(config, Attention::Dense) as f64 / 1e9) } else { v };
        println!(
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            config.name,
            Attention::Dense.pair_count(&layout),
            Attention::LayerBlocks.pair_count(&layout),
            skipped(dense, if config.train { fmt_s(train(dense)) } else { "–".to_owned() }),
            if config.train { fmt_s(train(sparse)) } else { "–".to_owned() },
            ratio(train(dense), train(sparse)),
            skipped(dense, fmt_s(euler(dense))),
            fmt_s(euler(sparse)),
            ratio(euler(dense), euler(sparse)),
            skipped(dense, fmt_gb(rss(dense))),
            fmt_gb(rss(sparse)),
        );
    }
    if args.iter().any(|a| a == "--burn") {
        for config in CONFIGS.iter().filter(|c| c.layout[0] == 30) {
            let layout = Layout(config.layout.to_vec());
            let (fused_train, fused_euler) = bench_fused(config, Attention::Dense, steps);
            let (burn_train, burn_euler) = bench_burn(config.name, &layout, config.d, config.batch, steps.min(2));
            println!(
                "{}: fused/burn speed-up {:.1}x per training step, {:.1}x per Euler step",
                config.name,
                burn_train / fused_train.expect("timed"),
                burn_euler / fused_euler
            );
        }
    }
}
