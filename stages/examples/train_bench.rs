//! Optimizer steps per second of the CPU base-MLP trainer (one thread, batch 64), for the
//! UCI MLP (30-16-16-2, Adam) and the MNIST MLP (784-10-10, SGD with momentum).
//!
//! `cargo run --release -p wfpipe-stages --example train_bench -- [DATA_DIR] [EPOCHS]`
//! DATA_DIR holds `mnist/` (default: `$WFPIPE_DATA`, else `data`).

use std::path::PathBuf;
use std::time::Instant;

use wfpipe_stages::data::{self, DatasetName, DEFAULT_SPLIT_SEED};
use wfpipe_stages::layout::Layout;
use wfpipe_stages::mlp::{self, MlpConfig, OptimizerConfig, TrainConfig};
use wfpipe_stages::rng;

fn bench(name: &str, dataset: &data::Dataset, layout: Layout, optimizer: OptimizerConfig, epochs: usize) {
    let config = TrainConfig { epochs, batch_size: 64, optimizer };
    let mut theta = MlpConfig::new(layout.clone()).init(&mut rng::stream(0, "bench init", 0));
    let steps = epochs * mlp::train::batches_per_epoch(dataset.train.len(), 64);
    let start = Instant::now();
    mlp::train(&layout, &mut theta, &dataset.train, &config, None, &mut rng::stream(0, "bench shuffle", 0), |_, _, _| {})
        .expect("training does not diverge");
    let secs = start.elapsed().as_secs_f64();
    let metrics = mlp::evaluate(&layout, &theta, &dataset.test, 64, &mut Default::default());
    println!(
        "{name}: {steps} steps in {secs:.2} s = {:.0} steps/s (test accuracy {:.3}, loss {:.3})",
        steps as f64 / secs,
        metrics.accuracy,
        metrics.loss
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let data_dir = args
        .next()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("WFPIPE_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"));
    let mnist_epochs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);

    let uci = data::load(DatasetName::UciWdbc, &data_dir, DEFAULT_SPLIT_SEED).expect("UCI WDBC is built in");
    bench("uci-wdbc 30-16-16-2 adam", &uci, Layout(vec![30, 16, 16, 2]), OptimizerConfig::adam(1e-3), 500);

    match data::load(DatasetName::Mnist, &data_dir, DEFAULT_SPLIT_SEED) {
        Ok(mnist) => bench("mnist 784-10-10 sgd", &mnist, Layout(vec![784, 10, 10]), OptimizerConfig::sgd(0.1, 0.9, 1e-5), mnist_epochs),
        Err(e) => eprintln!("skipping MNIST: {e}"),
    }
}
