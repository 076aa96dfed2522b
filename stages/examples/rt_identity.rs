//! Can the relational transformer learn to copy its input? Trains the fused engine on
//! `x ↦ x` for random UCI-layout vectors and prints the MSE curve against the input
//! variance (a model that learns nothing stays at the variance).
//!
//! Run with `cargo run -p wfpipe-stages --example rt_identity [-- d layers steps]`.

use wfpipe_stages::flow::adam::Adam;
use wfpipe_stages::layout::Layout;
use wfpipe_stages::noise::ResumableRng;
use wfpipe_stages::rt::fused::{FusedGraph, FusedRt};
use wfpipe_stages::rt::graph::{GraphSpec, TimeChannel};
use wfpipe_stages::rt::model::RtConfig;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (d, layers, steps) = (args.first().copied().unwrap_or(8), args.get(1).copied().unwrap_or(2), args.get(2).copied().unwrap_or(300));
    let layout = Layout(vec![30, 16, 16, 2]);
    let config = RtConfig::for_layout(&layout, d, layers, 1);
    let model = config.init::<burn::backend::NdArray<f32>>(0, &Default::default());
    let mut engine = FusedRt::from_model(&model, &config);
    let graph = FusedGraph::new(&GraphSpec::new(&layout, TimeChannel::Faithful, Default::default()));
    let mut adam = Adam::new(engine.map.len);
    let mut rng = ResumableRng::seed_from(1);
    let (batch, p) = (16, layout.num_params());
    let mut tapes = Vec::new();
    let std = 0.2f32;
    for step in 1..=steps {
        let x = rng.normal_vec(batch * p, 0.0, std as f64);
        let t = vec![0.5f32; batch];
        let y = engine.forward_taped(&graph, &x, &t, &mut tapes);
        let n = (batch * p) as f32;
        let loss: f32 = y.iter().zip(&x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / n;
        let dout: Vec<f32> = y.iter().zip(&x).map(|(a, b)| 2.0 * (a - b) / n).collect();
        let grads = engine.backward(&graph, &mut tapes, &dout);
        adam.update(1e-3, &mut engine.params, &grads);
        if step % 25 == 0 || step == 1 {
            println!("step {step}: mse {loss:.5} (input variance {:.5})", std * std);
        }
    }
}
