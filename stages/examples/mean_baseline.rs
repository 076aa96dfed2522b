//! The loss of predicting the targets' mean, two ways (docs/science.md 5.8): each batch's own
//! mean, the `mean_predictor_loss` of `train-flow`'s `loss_by_time` table, and the mean over
//! the whole weight set, which a flow can learn. The first is fit to the targets it is
//! scored on, so it is the lower. For reference it also prints the loss of another batch's
//! mean.
//!
//! `cargo run -p wfpipe-stages --example mean_baseline -- FLOW_JSON WEIGHTS BATCH`, with
//! `flow.json` of a cached `train-flow` entry (for its geometry and loss) and the weight
//! set it trained on.

use std::path::Path;
use wfpipe_stages::flow::{train::loss_value, TrainedFlow};
use wfpipe_stages::noise::ResumableRng;
use wfpipe_stages::rows::mean_row as mean;
use wfpipe_stages::weights::WeightSet;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let [_, flow, weights, batch] = &a[..] else {
        eprintln!("usage: mean_baseline FLOW_JSON WEIGHTS BATCH");
        std::process::exit(2);
    };
    let flow: TrainedFlow = serde_json::from_slice(&std::fs::read(flow).expect("reading flow.json")).expect("a flow.json");
    let set = WeightSet::read(Path::new(weights)).expect("a weight set");
    let b: usize = batch.parse().expect("BATCH is a positive integer");
    let p = set.params();
    let spec = &flow.spec;
    let pop = mean(&set.data, p);
    let mut rng = ResumableRng::seed_from(1);
    let n = 400; // batches
    let (mut ins, mut popl, mut other) = (0.0, 0.0, 0.0);
    for _ in 0..n {
        let pick = |rng: &mut ResumableRng| -> Vec<f32> { (0..b).flat_map(|_| set.row(rng.below(set.count)).to_vec()).collect() };
        let batch = pick(&mut rng);
        let o = pick(&mut rng);
        ins += loss_value(spec, mean(&batch, p).repeat(b), batch.clone());
        popl += loss_value(spec, pop.repeat(b), batch.clone());
        other += loss_value(spec, mean(&o, p).repeat(b), batch.clone());
    }
    let n = n as f64;
    println!("B {b}: in-sample mean {:.4}, population mean {:.4} (x{:.3}), another batch's mean {:.4}", ins / n, popl / n, popl / ins, other / n);
}
