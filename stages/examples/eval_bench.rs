//! Wall time of the evaluation of 512 MNIST networks (784-10-10) on the 5,000 test images:
//! per-network accuracy and loss, the KDE/JSD diversity (N = 64, K = 1,000, h = 1) and the
//! model-averaging curve up to 64 networks, on a pool of THREADS threads.
//!
//! `cargo run --release -p wfpipe-stages --example eval_bench -- [DATA_DIR] [THREADS]`
//! DATA_DIR holds `mnist/` (default: `$WFPIPE_DATA`, else `data`). The networks are
//! N(0, 0.1²) draws: the cost does not depend on the values.

use std::path::PathBuf;
use std::time::Instant;

use wfpipe_stages::data::{self, DatasetName, DEFAULT_SPLIT_SEED};
use wfpipe_stages::eval::bma::{bma_curve, Averaging};
use wfpipe_stages::eval::diversity::{diversity, output_sets, DiversityConfig, JsdForm};
use wfpipe_stages::eval::metrics::evaluate_networks;
use wfpipe_stages::layout::Layout;
use wfpipe_stages::mlp::MlpConfig;
use wfpipe_stages::rng;

const NETWORKS: usize = 512;

fn main() {
    let mut args = std::env::args().skip(1);
    let data_dir = args
        .next()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("WFPIPE_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"));
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");

    let start = Instant::now();
    let mnist = data::load(DatasetName::Mnist, &data_dir, DEFAULT_SPLIT_SEED).expect("MNIST files under DATA_DIR/mnist");
    println!("load mnist: {:.2} s", start.elapsed().as_secs_f64());

    let layout = Layout(vec![784, 10, 10]);
    let mlp = MlpConfig::new(layout.clone());
    let nets: Vec<Vec<f32>> = (0..NETWORKS).map(|i| mlp.init(&mut rng::stream(0, "bench", i as u64))).collect();
    let refs: Vec<&[f32]> = nets.iter().map(Vec::as_slice).collect();

    let start = Instant::now();
    let metrics = pool.install(|| evaluate_networks(&layout, &refs, &mnist.test, 64)).expect("evaluation");
    let secs = start.elapsed().as_secs_f64();
    let mean = metrics.iter().map(|m| m.accuracy).sum::<f64>() / metrics.len() as f64;
    println!("metrics: {NETWORKS} networks × {} images in {secs:.2} s on {threads} threads (mean accuracy {mean:.3})", mnist.test.len());

    let start = Instant::now();
    let config = DiversityConfig { bandwidth: 1.0, form: JsdForm::MonteCarlo };
    let d = pool.install(|| {
        let sets = output_sets(&layout, &refs[..64], &mnist.test, 1000).expect("output sets");
        diversity(&sets, 10, config).expect("diversity")
    });
    println!("diversity: N = 64, K = 1000 in {:.2} s (diversity {:.3e} ± {:.1e})", start.elapsed().as_secs_f64(), d.all.mean, d.all.std);

    let start = Instant::now();
    let curve = pool.install(|| bma_curve(&layout, &refs[..64], &mnist.test, 64, &[1, 2, 4, 8, 16, 32, 64], Averaging::Probabilities)).expect("bma");
    println!("bma: up to 64 networks in {:.2} s (accuracy at 64: {:.3})", start.elapsed().as_secs_f64(), curve.last().map_or(f64::NAN, |p| p.accuracy));
}
