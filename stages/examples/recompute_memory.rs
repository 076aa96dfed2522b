//! Peak memory of one training step of the burn module on the CPU backend, with the layers'
//! activations kept and with `recompute` (docs/science.md §11.3), and the extrapolation to
//! the dense MNIST graph.
//!
//! Memory is counted by a global allocator that tracks the bytes in use: the peak of a step
//! above what was in use before it is what the step's graph costs. Each configuration runs
//! a warm-up step (Adam allocates its moments) and then the measured step, with the same
//! batch, so both variants also report whether they trained the same bytes.
//!
//! Run with `cargo run -p wfpipe-stages --example recompute_memory`.

use std::alloc::{GlobalAlloc, Layout as AllocLayout};
use std::sync::atomic::{AtomicUsize, Ordering};

use wfpipe_stages::backend::Cpu;
use wfpipe_stages::coupling::Coupling;
use wfpipe_stages::flow::estimate::Output;
use wfpipe_stages::flow::train::{BurnFlow, FlowModel};
use wfpipe_stages::flow::{FlowSpec, SourceMode, SourceSpec};
use wfpipe_stages::geometry::Geometry;
use wfpipe_stages::layout::Layout;
use wfpipe_stages::noise::ResumableRng;
use wfpipe_stages::rt::graph::TimeChannel;
use wfpipe_stages::rt::model::RtConfig;
use wfpipe_stages::rt::pairs::Attention;

/// mimalloc (as the CLI uses), counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const LAYERS: usize = 5;

struct Config {
    name: &'static str,
    layout: Layout,
    d: usize,
    batch: usize,
}

/// Bytes above the level before it that one training step needs at its peak, and the model
/// bytes after it.
fn step_peak(config: &Config, recompute: bool) -> (usize, Vec<u8>) {
    let layout = &config.layout;
    let spec = FlowSpec {
        geometry: Geometry::Euclidean,
        coupling: Coupling::Independent,
        layout: layout.clone(),
        rt: RtConfig::for_layout(layout, config.d, LAYERS, 1),
        time_channel: TimeChannel::Faithful,
        sigma: 0.0,
        source: SourceSpec { mode: SourceMode::Fresh, std: 0.1, count: 0, seed: 0 },
        output: Output::Target,
        attention: Attention::Dense,
        positions: Default::default(),
    };
    let mut flow = BurnFlow::<Cpu>::new(&spec, 1, &Default::default()).recomputing(recompute);
    let mut rng = ResumableRng::seed_from(2);
    let p = layout.num_params();
    let (xt, x1) = (rng.normal_vec(config.batch * p, 0.0, 0.1), rng.normal_vec(config.batch * p, 0.0, 0.1));
    let t: Vec<f32> = (0..config.batch).map(|i| (i as f32 + 0.5) / config.batch as f32).collect();
    flow.step(xt.clone(), t.clone(), x1.clone(), 1e-3);
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    flow.step(xt, t, x1, 1e-3);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    (peak, flow.model_bytes().expect("model record"))
}

fn main() {
    let configs = [
        Config { name: "UCI 30-16-16-2, d_E 64, B 32", layout: Layout(vec![30, 16, 16, 2]), d: 64, batch: 32 },
        Config { name: "UCI 30-16-16-2, d_E 32, B 8", layout: Layout(vec![30, 16, 16, 2]), d: 32, batch: 8 },
        Config { name: "MNIST-like 196-10-10, d_E 32, B 8", layout: Layout(vec![196, 10, 10]), d: 32, batch: 8 },
    ];
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!("Dense attention, {LAYERS} layers, fp32, one training step (forward, backward, Adam) after a warm-up step.\n");
    println!("| configuration | pairs N² | peak kept | peak recompute | ratio | floats per pair, layer and sample (kept) | same bytes |");
    println!("|---|---|---|---|---|---|---|");
    let mut per_pair = Vec::new();
    for config in &configs {
        let (kept, kept_bytes) = step_peak(config, false);
        let (recomputed, recomputed_bytes) = step_peak(config, true);
        let pairs = config.layout.num_nodes().pow(2);
        let floats = kept as f64 / 4.0 / (pairs * LAYERS * config.batch) as f64;
        let recomputed_floats = recomputed as f64 / 4.0 / (pairs * config.batch) as f64;
        per_pair.push((config.d, floats, recomputed_floats));
        println!(
            "| {} | {pairs} | {:.3} GiB | {:.3} GiB | {:.2} | {floats:.0} (formula 13d + 8D: {}) | {} |",
            config.name,
            gib(kept as f64),
            gib(recomputed as f64),
            kept as f64 / recomputed as f64,
            13 * config.d + 8 * (config.d + 1),
            if kept_bytes == recomputed_bytes { "yes" } else { "NO" },
        );
    }
    // Extrapolation to the dense MNIST 784-10-10 graph at d_E 32, B 8 with the measured
    // floats per pair of the d_E 32 configurations (memory is linear in pairs and batch).
    let (pairs, batch) = (804usize.pow(2) as f64, 8.0);
    for &(d, floats, recomputed_floats) in per_pair.iter().filter(|c| c.0 == 32) {
        println!(
            "\nMNIST 784-10-10 dense, d_E {d}, B 8, {LAYERS} layers, from these floats per pair: kept {:.1} GiB, recompute {:.1} GiB",
            gib(pairs * batch * LAYERS as f64 * floats * 4.0),
            gib(pairs * batch * recomputed_floats * 4.0),
        );
    }
}
