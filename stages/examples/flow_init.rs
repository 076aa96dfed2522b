//! The loss of freshly initialized sphere flows, seed by seed: which initializations
//! start far above the mean predictor, and whether they are the ones whose predicted
//! neuron rows have almost zero norm (canonicalization divides by those norms). The last
//! column is the same model's loss when its output is read as a velocity
//! (`output = "velocity"`: x̂1 = x_t + (1−t)·out), next to the loss of x_t itself.
//!
//! `cargo run -p wfpipe-stages --example flow_init -- <canonical weights.safetensors> [seeds] [d_model] [layers]`

use wfpipe_stages::coupling::Coupling;
use wfpipe_stages::flow::path::{interpolate, sample_time};
use wfpipe_stages::flow::estimate::{Estimator, Output};
use wfpipe_stages::flow::source::prior_set;
use wfpipe_stages::flow::train::loss_value;
use wfpipe_stages::flow::{FlowSpec, SourceMode, SourceSpec};
use wfpipe_stages::geometry::{product::ProductGeometry, Geometry};
use wfpipe_stages::noise::ResumableRng;
use wfpipe_stages::rt::fused::{FusedGraph, FusedRt};
use wfpipe_stages::rt::graph::TimeChannel;
use wfpipe_stages::rt::model::RtConfig;
use wfpipe_stages::weights::WeightSet;

const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: flow_init <canonical weights.safetensors> [seeds] [d_model] [layers]");
    let seeds: u64 = args.get(1).map_or(10, |s| s.parse().expect("seed count"));
    let d_model: usize = args.get(2).map_or(8, |s| s.parse().expect("d_model"));
    let layers: usize = args.get(3).map_or(2, |s| s.parse().expect("layers"));
    let set = WeightSet::read(std::path::Path::new(path)).expect("a weight set");
    assert!(set.is_canonical, "the sphere flows train on canonical weights");
    let layout = set.layout.clone();
    let p = layout.num_params();
    let (inputs, first) = (layout.0[0], layout.0[1]);
    let mut rng = ResumableRng::seed_from(123);
    let rows: Vec<usize> = (0..BATCH).map(|_| (rng.uniform() * set.count as f64) as usize % set.count).collect();
    let x1: Vec<f32> = rows.iter().flat_map(|&r| set.data[r * p..(r + 1) * p].iter().copied()).collect();
    let x0 = prior_set(&layout, BATCH, 0.1, true, &mut rng);
    let t: Vec<f32> = (0..BATCH).map(|_| sample_time(&mut rng)).collect();
    let mut mean = vec![0f32; p];
    x1.chunks(p).for_each(|row| mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / BATCH as f32));
    println!("seed  geometry    time-channel   loss at init  mean-predictor  min |row| (layer 1)  median |row|  velocity reading  x_t itself");
    for geometry in [Geometry::Normalized, Geometry::Geometric] {
        for time_channel in [TimeChannel::Faithful, TimeChannel::WeightEdges] {
            let spec = FlowSpec {
                geometry,
                coupling: Coupling::Independent,
                layout: layout.clone(),
                rt: RtConfig::for_layout(&layout, d_model, layers, 1),
                time_channel,
                sigma: 1e-4,
                source: SourceSpec { mode: SourceMode::Fixed, std: 0.1, count: BATCH, seed: 0 },
                output: Default::default(),
                attention: Default::default(),
                positions: Default::default(),
            };
            let xt = interpolate(geometry, &ProductGeometry::new(&layout), &x0, &x1, &t, 1e-4, &mut ResumableRng::seed_from(5));
            let baseline = loss_value(&spec, mean.repeat(BATCH), x1.clone());
            let of_xt = loss_value(&spec, xt.clone(), x1.clone());
            let graph = FusedGraph::new(&spec.graph(&layout));
            for seed in 0..seeds {
                let model = spec.rt.init::<burn::backend::NdArray<f32>>(seed, &Default::default());
                let pred = FusedRt::from_model(&model, &spec.rt).predict(&graph, &xt, &t);
                // Norm of each first-layer neuron's incoming row (flat offset a·n_1 + b).
                let mut norms: Vec<f32> = pred
                    .chunks(p)
                    .flat_map(|net| {
                        (0..first).map(move |b| {
                            (0..inputs).map(|a| net[a * first + b].powi(2)).sum::<f32>().sqrt()
                        })
                    })
                    .collect();
                norms.sort_by(f32::total_cmp);
                let velocity = Estimator { output: Output::Velocity, ..spec.estimator(&layout) }.apply_rows(pred.clone(), &xt, &t);
                let velocity = loss_value(&spec, velocity, x1.clone());
                let loss = loss_value(&spec, pred, x1.clone());
                println!(
                    "{seed:>4}  {:<10}  {:<13}  {loss:>12.4}  {baseline:>14.4}  {:>19.2e}  {:>12.2e}  {velocity:>16.4}  {of_xt:>10.4}",
                    geometry.name(),
                    format!("{time_channel:?}"),
                    norms[0],
                    norms[norms.len() / 2],
                );
            }
        }
    }
}
