//! `wfpipe export`: a trained flow leaves the cache as files other tools open, among them
//! `flow.safetensors` with every parameter under its module path.

mod common;
use common::*;

const TOY: &str = r#"
[stage.toy-target]
kind = "toy-data"
count = 64

[stage.toy-flow]
kind = "train-flow"
weights = "toy-target"
iterations = 5
batch_size = 4
d_model = 8
layers = 1
"#;

/// The header of a safetensors file: name -> (dtype, shape, [start, end)), and metadata.
fn header(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, usize) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (header.as_object().unwrap().clone(), 8 + len)
}

#[test]
fn a_trained_flow_exports_as_named_safetensors_with_its_config() {
    let p = Project::new();
    p.write("pipelines/toy.toml", TOY);
    let o = p.run(&["export", "pipelines/toy.toml", "toy-flow", "--to", "out"]);
    assert!(!o.status.success() && text(&o).contains("not in the cache: toy-flow"), "{}", text(&o));
    assert_ok(&p.run(&["run", "pipelines/toy.toml"]));
    let o = p.run(&["export", "pipelines/toy.toml", "toy-flow", "--to", "out"]);
    assert_ok(&o);
    assert!(text(&o).contains("(with flow.safetensors)"), "{}", text(&o));
    let dir = p.path().join("out/toy-flow");
    for f in ["flow.json", "flow.mpk", "flow.safetensors"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let bytes = std::fs::read(dir.join("flow.safetensors")).unwrap();
    let (header, data_start) = header(&bytes);
    let metadata = header["__metadata__"].as_object().unwrap();
    assert_eq!(metadata["format"], "wfpipe-flow-v1");
    let config: serde_json::Value = serde_json::from_str(metadata["config"].as_str().unwrap()).unwrap();
    let flow_json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("flow.json")).unwrap()).unwrap();
    assert_eq!(config, flow_json, "the config is flow.json");
    // Every tensor f32, named by its module path, laid end to end over the data.
    let mut spans = Vec::new();
    for (name, entry) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        assert_eq!(entry["dtype"], "F32", "{name}");
        assert!(name.split('.').all(|part| !part.is_empty()), "{name}");
        let shape: usize = entry["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
        let offsets = entry["data_offsets"].as_array().unwrap();
        let (start, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        assert_eq!(end - start, 4 * shape, "{name}");
        spans.push((start, end));
    }
    spans.sort();
    assert_eq!(spans.first().unwrap().0, 0);
    assert!(spans.windows(2).all(|w| w[0].1 == w[1].0), "tensors overlap or leave gaps");
    assert_eq!(data_start + spans.last().unwrap().1, bytes.len());
    let names: Vec<&String> = header.keys().collect();
    assert!(names.iter().any(|n| n.starts_with("layers.0.")), "{names:?}");
    // The export is a function of the entry: twice the same bytes.
    assert_ok(&p.run(&["export", "pipelines/toy.toml", "toy-flow", "--to", "again"]));
    assert_eq!(std::fs::read(p.path().join("again/toy-flow/flow.safetensors")).unwrap(), bytes);
}

const TOY_SWEEP: &str = r#"
[stage.toy-target]
kind = "toy-data"
count = 32

[stage.toy-flow]
kind = "train-flow"
weights = "toy-target"
iterations = 5
batch_size = 4
d_model = 8
layers = 1

[stage.toy-samples]
kind = "sample"
flow = "toy-flow"
count = 8
matrix.steps = [2, 3]

[stage.toy-eval]
kind = "evaluate"
weights = "toy-samples"
mode = "toy"
"#;

/// The rows of an exported parquet file, read back with Polars.
fn frame(path: &std::path::Path) -> polars::prelude::DataFrame {
    wfpipe::table::read_parquet(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn names(df: &polars::prelude::DataFrame) -> Vec<String> {
    df.get_column_names().iter().map(|n| n.to_string()).collect()
}

#[test]
fn exported_tables_carry_key_and_axes_with_network_and_summary_rows_apart() {
    let p = Project::new();
    p.write("pipelines/toy.toml", TOY_SWEEP);
    assert_ok(&p.run(&["run", "pipelines/toy.toml"]));
    let o = p.run(&["export", "pipelines/toy.toml", "toy-eval", "--to", "out"]);
    assert_ok(&o);
    let plan = text(&p.run(&["plan", "pipelines/toy.toml", "--format", "json"]));
    let out = p.path().join("out");
    for steps in [2i64, 3] {
        let dir = out.join(format!("toy-eval_steps-{steps}"));
        let per_network = frame(&dir.join("toy.parquet"));
        let summary = frame(&dir.join("toy_summary.parquet"));
        // key first, then the axis, then the declared columns in declared order
        assert_eq!(names(&per_network), ["key", "steps", "network", "coordinate_mean", "coordinate_std"], "{dir:?}");
        assert_eq!(per_network.height(), 8);
        assert_eq!(summary.height(), 1);
        assert_eq!(&names(&summary)[..2], ["key", "steps"]);
        assert!(names(&summary).contains(&"coordinate_mean_std".to_owned()) && !names(&summary).contains(&"network".to_owned()), "{:?}", names(&summary));
        assert!(!names(&per_network).contains(&"row_type".to_owned()));
        let first = &wfpipe::table::frame_to_rows(&per_network)[0];
        let key = first["key"].to_string();
        assert!(key.len() >= 12 && plan.contains(&key), "the key column is the instance's key: {key}");
        assert_eq!(first["steps"].to_string(), steps.to_string());
        // the CSV beside it has the same header
        let csv = std::fs::read_to_string(dir.join("toy.csv")).unwrap();
        assert_eq!(csv.lines().next().unwrap(), "key,steps,network,coordinate_mean,coordinate_std");
    }
    // one file per stage and table holds the whole sweep
    let sweep = frame(&out.join("toy-eval.toy.parquet"));
    assert_eq!(sweep.height(), 16);
    let steps: std::collections::BTreeSet<String> = wfpipe::table::frame_to_rows(&sweep).iter().map(|r| r["steps"].to_string()).collect();
    assert_eq!(steps, ["2".to_owned(), "3".to_owned()].into());
    assert_eq!(frame(&out.join("toy-eval.toy_summary.parquet")).height(), 2);
    assert!(text(&o).contains("toy-eval.toy_summary.parquet"), "{}", text(&o));
    // the cache keeps the table as the stage wrote it
    let o = p.run(&["run", "pipelines/toy.toml"]);
    assert!(text(&o).contains("0 to run"), "{}", text(&o));
}
