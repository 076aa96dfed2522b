//! The prepared device check that `tools/gpu-check.sh` runs: parity of the relational
//! transformer on the backend under test against the CPU, and the time of one training step
//! and one Euler step with the FLOP rate of docs/science.md §11.2.
//!
//! - Parity: the output of a forward pass, every parameter gradient and the input gradient
//!   of `Σ w ⊙ f(x)` on the same parameters and inputs, as the largest absolute difference
//!   and that difference relative to the largest reference value.
//! - Timings: the burn module as `train-flow` runs it on a GPU (`BurnFlow`: forward,
//!   backward, Adam; the dense MNIST d_E 32 case with `recompute`), and one forward pass as a
//!   sampling step does; a warm-up step first (kernel compilation), then the mean of 3.
//!
//! With the `cuda` feature and a CUDA device the backend under test is CUDA at the sizes of
//! docs/science.md §11.4. With `--cpu` it is the CPU backend at small sizes: CI runs that
//! so the check keeps building and running; its parity is the CPU against itself (0).
//!
//! `cargo run --release --features cuda -p wfpipe-stages --example gpu_check -- [--cpu] [--out FILE]`

use std::fmt::Write;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use wfpipe_stages::backend::Cpu;
use wfpipe_stages::coupling::Coupling;
use wfpipe_stages::flow::estimate::Output;
use wfpipe_stages::flow::train::{BurnFlow, FlowModel};
use wfpipe_stages::flow::{FlowSpec, SourceMode, SourceSpec};
use wfpipe_stages::geometry::Geometry;
use wfpipe_stages::layout::Layout;
use wfpipe_stages::noise::ResumableRng;
use wfpipe_stages::rt::forward_flops;
use wfpipe_stages::rt::graph::{GraphSpec, TimeChannel};
use wfpipe_stages::rt::model::RtConfig;
use wfpipe_stages::rt::pairs::Attention;

const LAYERS: usize = 5;
const TIMED_STEPS: usize = 3;

#[derive(Clone)]
struct Case {
    name: &'static str,
    layout: Layout,
    d: usize,
    batch: usize,
    attention: Attention,
    recompute: bool,
}

fn case(name: &'static str, layout: &[usize], d: usize, batch: usize, attention: Attention) -> Case {
    Case { name, layout: Layout(layout.to_vec()), d, batch, attention, recompute: false }
}

/// `(parity cases, timing cases)` for the backend under test.
fn cases(on_gpu: bool) -> (Vec<Case>, Vec<Case>) {
    use Attention::{Dense, LayerBlocks};
    const UCI: &[usize] = &[30, 16, 16, 2];
    const MNIST: &[usize] = &[784, 10, 10];
    if on_gpu {
        let parity = vec![
            case("UCI d_E 16 B 4", UCI, 16, 4, Dense),
            case("UCI d_E 16 B 4", UCI, 16, 4, LayerBlocks),
            case("MNIST-like 100-10-10 d_E 8 B 2", &[100, 10, 10], 8, 2, Dense),
            case("MNIST-like 100-10-10 d_E 8 B 2", &[100, 10, 10], 8, 2, LayerBlocks),
            case("MNIST d_E 8 B 2", MNIST, 8, 2, LayerBlocks),
        ];
        let timing = vec![
            case("UCI d_E 64 B 32", UCI, 64, 32, Dense),
            case("UCI d_E 64 B 32", UCI, 64, 32, LayerBlocks),
            case("MNIST d_E 8 B 8", MNIST, 8, 8, Dense),
            case("MNIST d_E 8 B 8", MNIST, 8, 8, LayerBlocks),
            Case { recompute: true, ..case("MNIST d_E 32 B 8", MNIST, 32, 8, Dense) },
            case("MNIST d_E 32 B 8", MNIST, 32, 8, LayerBlocks),
        ];
        (parity, timing)
    } else {
        let parity = vec![case("UCI d_E 8 B 2", UCI, 8, 2, Dense), case("UCI d_E 8 B 2", UCI, 8, 2, LayerBlocks)];
        let timing = vec![
            case("UCI d_E 8 B 4", UCI, 8, 4, Dense),
            Case { recompute: true, ..case("UCI d_E 8 B 4", UCI, 8, 4, Dense) },
            case("UCI d_E 8 B 4", UCI, 8, 4, LayerBlocks),
            case("MNIST d_E 8 B 1", MNIST, 8, 1, LayerBlocks),
        ];
        (parity, timing)
    }
}

/// Forward output, parameter gradients (visiting order) and input gradient of `Σ w ⊙ f(x)`.
fn forward_and_gradients<B: AutodiffBackend>(case: &Case) -> [Vec<f32>; 3] {
    struct Flat<'g, B: AutodiffBackend>(&'g B::Gradients, Vec<f32>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flat<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = param.val().grad(self.0).map(|g| g.into_data().convert::<f32>().to_vec::<f32>().expect("f32"));
            self.1.extend(g.unwrap_or_else(|| vec![0.0; param.val().shape().num_elements()]));
        }
    }
    let device = B::Device::default();
    let model = RtConfig::for_layout(&case.layout, case.d, LAYERS, 1).init::<B>(7, &device);
    let spec = GraphSpec::new(&case.layout, TimeChannel::Faithful, case.attention);
    let (batch, p) = (case.batch, case.layout.num_params());
    let mut rng = ResumableRng::seed_from(11);
    let x = Tensor::<B, 2>::from_data(TensorData::new(rng.normal_vec(batch * p, 0.0, 0.5), [batch, p]), &device).require_grad();
    let w = Tensor::<B, 2>::from_data(TensorData::new(rng.normal_vec(batch * p, 0.0, 1.0), [batch, p]), &device);
    let times: Vec<f32> = (0..batch).map(|i| (i as f32 + 0.5) / batch as f32).collect();
    let t = Tensor::<B, 1>::from_data(TensorData::new(times, [batch]), &device);
    let out = model.forward(x.clone(), t, &spec);
    let grads = (out.clone() * w).sum().backward();
    let mut flat = Flat::<B>(&grads, Vec::new());
    model.visit(&mut flat);
    let input = x.grad(&grads).expect("input gradient").into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    [out.into_data().convert::<f32>().to_vec::<f32>().expect("f32"), flat.1, input]
}

/// `(max |a − b|, max |a − b| / max |b|)`.
fn difference(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "the backends disagree on sizes");
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    let scale = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    (diff, if scale > 0.0 { diff / scale } else { diff })
}

fn flow_spec(case: &Case) -> FlowSpec {
    FlowSpec {
        geometry: Geometry::Euclidean,
        coupling: Coupling::Independent,
        layout: case.layout.clone(),
        rt: RtConfig::for_layout(&case.layout, case.d, LAYERS, 1),
        time_channel: TimeChannel::Faithful,
        sigma: 0.0,
        source: SourceSpec { mode: SourceMode::Fresh, std: 0.1, count: 0, seed: 0 },
        output: Output::Target,
        attention: case.attention,
        positions: Default::default(),
    }
}

/// Whether 3 training steps with `recompute` give the model bytes of 3 steps without it.
fn recompute_is_identical<B: AutodiffBackend>(case: &Case) -> bool {
    let spec = flow_spec(case);
    let (batch, p) = (case.batch, case.layout.num_params());
    let trained = |recompute: bool| {
        let mut flow = BurnFlow::<B>::new(&spec, 1, &B::Device::default()).recomputing(recompute);
        let mut rng = ResumableRng::seed_from(5);
        for _ in 0..3 {
            let (xt, x1) = (rng.normal_vec(batch * p, 0.0, 0.1), rng.normal_vec(batch * p, 0.0, 0.1));
            flow.step(xt, vec![0.5; batch], x1, 1e-2);
        }
        flow.model_bytes().expect("model record")
    };
    trained(false) == trained(true)
}

/// Seconds of one training step and of one Euler step (one forward pass without a graph).
fn timings<B: AutodiffBackend>(case: &Case) -> (f64, f64) {
    let device = B::Device::default();
    let spec = flow_spec(case);
    let (batch, p) = (case.batch, case.layout.num_params());
    let mut rng = ResumableRng::seed_from(3);
    let (xt, x1) = (rng.normal_vec(batch * p, 0.0, 0.1), rng.normal_vec(batch * p, 0.0, 0.1));
    let times: Vec<f32> = (0..batch).map(|i| (i as f32 + 0.5) / batch as f32).collect();

    let mut flow = BurnFlow::<B>::new(&spec, 1, &device).recomputing(case.recompute);
    let mut train = || flow.step(xt.clone(), times.clone(), x1.clone(), 1e-4); // the loss read-back syncs
    train();
    let start = Instant::now();
    (0..TIMED_STEPS).for_each(|_| {
        train();
    });
    let train_s = start.elapsed().as_secs_f64() / TIMED_STEPS as f64;

    let model = spec.rt.init::<B>(1, &device).valid();
    let graph = spec.graph(&case.layout);
    let x = Tensor::from_data(TensorData::new(xt.clone(), [batch, p]), &device);
    let t = Tensor::from_data(TensorData::new(times.clone(), [batch]), &device);
    let euler = || model.forward(x.clone(), t.clone(), &graph).into_data();
    euler();
    let start = Instant::now();
    (0..TIMED_STEPS).for_each(|_| {
        euler();
    });
    (train_s, start.elapsed().as_secs_f64() / TIMED_STEPS as f64)
}

fn label(case: &Case) -> String {
    let attention = if case.attention.is_dense() { "dense" } else { "layer-blocks" };
    format!("{}, {attention}{}", case.name, if case.recompute { ", recompute" } else { "" })
}

fn check<B: AutodiffBackend>(backend: &str, on_gpu: bool) -> String {
    let (parity, timing) = cases(on_gpu);
    let mut out = String::new();
    let _ = writeln!(out, "# wfpipe device check: {backend}\n");
    let _ = writeln!(out, "Relational transformer, {LAYERS} layers, 1 head, fp32.\n");
    let _ = writeln!(out, "## Parity against the CPU backend\n");
    let _ = writeln!(out, "| case | output max abs | rel | parameter gradients max abs | rel | input gradient max abs | rel |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for case in &parity {
        eprintln!("parity: {}", label(case));
        let (got, want) = (forward_and_gradients::<B>(case), forward_and_gradients::<Cpu>(case));
        let cells: Vec<String> = got
            .iter()
            .zip(&want)
            .map(|(g, w)| {
                let (abs, rel) = difference(g, w);
                format!("{abs:.2e} | {rel:.2e}")
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", label(case), cells.join(" | "));
    }
    let _ = writeln!(out, "\n`recompute` on this backend, 3 training steps with and without it:\n");
    for case in parity.iter().take(2) {
        let same = if recompute_is_identical::<B>(case) { "the same model bytes" } else { "DIFFERENT model bytes" };
        let _ = writeln!(out, "- {}: {same}", label(case));
    }
    let _ = writeln!(out, "\n## One step, mean of {TIMED_STEPS} after a warm-up\n");
    let _ = writeln!(out, "FLOPs from docs/science.md §11.2: an Euler step is one forward pass per sample, a training step three.\n");
    let _ = writeln!(out, "| case | pairs | training step | GFLOP/s | Euler step | GFLOP/s |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for case in &timing {
        eprintln!("timing: {}", label(case));
        let (train_s, euler_s) = timings::<B>(case);
        let forward = forward_flops(&case.layout, case.attention, case.d, LAYERS) * case.batch as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} s | {:.1} | {:.4} s | {:.1} |",
            label(case),
            case.attention.pair_count(&case.layout),
            train_s,
            3.0 * forward / train_s / 1e9,
            euler_s,
            forward / euler_s / 1e9,
        );
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cpu = args.iter().any(|a| a == "--cpu");
    let out_path = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let summary = if cpu {
        check::<Cpu>("CPU backend (small sizes; parity is the CPU against itself)", false)
    } else {
        match wfpipe_stages::backend::cuda_devices() {
            #[cfg(feature = "cuda")]
            Ok(devices) => check::<wfpipe_stages::backend::Gpu>(&format!("CUDA ({devices} devices; device 0 under test)"), true),
            #[cfg(not(feature = "cuda"))]
            Ok(_) => unreachable!("without the cuda feature there are no CUDA devices"),
            Err(e) => {
                eprintln!("error: {e}\n(`--cpu` checks the CPU backend instead)");
                std::process::exit(2);
            }
        }
    };
    match out_path {
        Some(path) => std::fs::write(&path, &summary).unwrap_or_else(|e| panic!("writing {path}: {e}")),
        None => print!("{summary}"),
    }
}
