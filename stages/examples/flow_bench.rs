//! Throughput of the relational-transformer flow on this machine: one training step
//! (forward, backward, Adam) and one Euler sampling step, reported as iterations per second
//! and GFLOP/s with science.md §11.2's FLOP counts.
//!
//! Both engines run in the same process: the fused CPU engine (what `train-flow` and
//! `sample` use on the CPU) and the burn module on `Autodiff<NdArray>` (the reference; pass
//! `--no-burn` to skip it, it is slow). The last lines give the fused/burn speed ratios.
//!
//! Run with `cargo run --release -p wfpipe-stages --example flow_bench [-- --steps N] [--only toy|uci] [--no-burn]`.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use wfpipe_stages::backend::Cpu;
use wfpipe_stages::layout::Layout;
use wfpipe_stages::noise::Rng;
use wfpipe_stages::rt::graph::{GraphSpec, TimeChannel};
use wfpipe_stages::coupling::Coupling;
use wfpipe_stages::flow::train::{FlowModel, FusedFlow};
use wfpipe_stages::flow::{FlowSpec, SourceMode, SourceSpec};
use wfpipe_stages::geometry::Geometry;
use wfpipe_stages::rt::fused::{FusedGraph, FusedRt};
use wfpipe_stages::rt::model::{RelationalTransformer, RtConfig};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use wfpipe_stages::rt::forward_flops;

fn batch_tensors(layout: &Layout, batch: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = layout.num_params();
    let x = rng.normal_vec(batch * p, 0.0, 0.1);
    let target = rng.normal_vec(batch * p, 0.0, 0.1);
    let t = (0..batch).map(|_| rng.uniform() as f32).collect();
    (x, target, t)
}

/// Seconds per training step and per Euler step of the fused engine.
fn bench_fused(name: &str, layout: &Layout, d: usize, batch: usize, layers: usize, steps: usize) -> (f64, f64) {
    let spec = FlowSpec {
        geometry: Geometry::Euclidean,
        coupling: Coupling::Independent,
        layout: layout.clone(),
        rt: RtConfig::for_layout(layout, d, layers, 1),
        time_channel: TimeChannel::Faithful,
        sigma: 1e-4,
        source: SourceSpec { mode: SourceMode::Fresh, std: 0.1, count: 0, seed: 0 },
        output: Default::default(),
    };
    let mut flow = FusedFlow::new(&spec, 0);
    let mut rng = Rng::seed_from(0);
    let (x, target, t) = batch_tensors(layout, batch, &mut rng);
    flow.step(x, t, target, 1e-3); // warm-up: allocates the per-sample buffers
    let start = Instant::now();
    for _ in 0..steps {
        let (x, target, t) = batch_tensors(layout, batch, &mut rng);
        flow.step(x, t, target, 1e-3);
    }
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    let train_flops = 3.0 * batch as f64 * forward_flops(layout, d, layers);
    println!(
        "{name} fused: train step (fwd+bwd+Adam) {:.3} s, {:.2} it/s, {:.1} GFLOP/s",
        per_step,
        1.0 / per_step,
        train_flops / per_step / 1e9
    );
    let model = spec.rt.init::<burn::backend::NdArray<f32>>(0, &Default::default());
    let engine = FusedRt::from_model(&model, &spec.rt);
    let graph = FusedGraph::new(&GraphSpec::new(layout, TimeChannel::Faithful));
    let (x, _, t) = batch_tensors(layout, batch, &mut rng);
    let _ = engine.predict(&graph, &x, &t);
    let start = Instant::now();
    for _ in 0..steps {
        let _ = engine.predict(&graph, &x, &t);
    }
    let per_euler = start.elapsed().as_secs_f64() / steps as f64;
    let fwd = batch as f64 * forward_flops(layout, d, layers);
    println!(
        "{name} fused: Euler step for {batch} networks {:.3} s ({:.2} ms per network), {:.1} GFLOP/s",
        per_euler,
        per_euler * 1e3 / batch as f64,
        fwd / per_euler / 1e9
    );
    (per_step, per_euler)
}

fn bench(name: &str, layout: &Layout, d: usize, batch: usize, steps: usize) -> (f64, f64) {
    let device = Default::default();
    let layers = 5;
    let config = RtConfig::for_layout(layout, d, layers, 1);
    let mut model: RelationalTransformer<Cpu> = config.init(0, &device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init::<Cpu, RelationalTransformer<Cpu>>();
    let graph = GraphSpec::new(layout, TimeChannel::Faithful);
    let p = layout.num_params();
    let mut rng = Rng::seed_from(0);
    let tensor2 = |v: Vec<f32>| Tensor::<Cpu, 2>::from_data(TensorData::new(v, [batch, p]), &device);
    let tensor1 = |v: Vec<f32>| Tensor::<Cpu, 1>::from_data(TensorData::new(v, [batch]), &device);
    let mut train_step = |model: RelationalTransformer<Cpu>, rng: &mut Rng| {
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
    let train_flops = 3.0 * batch as f64 * forward_flops(layout, d, layers);
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
    let fwd = batch as f64 * forward_flops(layout, d, layers);
    println!(
        "{name} burn: Euler step for {batch} networks {:.3} s ({:.2} ms per network), {:.1} GFLOP/s",
        per_euler,
        per_euler * 1e3 / batch as f64,
        fwd / per_euler / 1e9
    );
    (per_step, per_euler)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let uci = Layout(vec![30, 16, 16, 2]);
    let with_burn = !args.iter().any(|a| a == "--no-burn");
    println!("threads: {}", rayon::current_num_threads());
    let mut configs = Vec::new();
    if only.as_deref() != Some("uci") {
        configs.push(("toy d=32 B=16", 32, 16));
    }
    if only.as_deref() != Some("toy") {
        configs.push(("uci d=64 B=32", 64, 32));
    }
    // `--custom d,batch,layers`: one more configuration, fused engine only.
    if let Some(spec) = args.iter().position(|a| a == "--custom").and_then(|i| args.get(i + 1)) {
        let v: Vec<usize> = spec.split(',').map(|x| x.parse().expect("--custom d,batch,layers")).collect();
        bench_fused(&format!("uci d={} B={} L={}", v[0], v[1], v[2]), &uci, v[0], v[1], v[2], steps);
        return;
    }
    for (name, d, batch) in configs {
        let (fused_train, fused_euler) = bench_fused(name, &uci, d, batch, 5, steps);
        if with_burn {
            let (burn_train, burn_euler) = bench(name, &uci, d, batch, steps.min(2));
            println!(
                "{name}: fused/burn speed-up {:.1}x per training step, {:.1}x per Euler step",
                burn_train / fused_train,
                burn_euler / fused_euler
            );
        }
    }
}
