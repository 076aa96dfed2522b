//! The pipeline files the repository ships: each loads, and `--set` with a stage pattern
//! switches thesis.toml to the layer-block model, as its header says.

use std::path::Path;

use wfpipe::ops;

fn pipelines() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
    files.sort();
    files
}

#[test]
fn every_committed_pipeline_loads() {
    let files = pipelines();
    assert!(files.iter().any(|f| f.ends_with("mnist-cpu.toml")), "{files:?}");
    for f in files {
        if let Err(e) = ops::load(&f, &[]) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn a_stage_pattern_sets_attention_on_every_flow_of_thesis_toml() {
    let thesis = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/thesis.toml");
    let (dense, _) = ops::load(&thesis, &[]).unwrap();
    let (sparse, _) = ops::load(&thesis, &["*.attention=\"layer-blocks\"".to_owned()]).unwrap();
    assert_eq!(dense.instances.len(), sparse.instances.len());
    let flops = |p: &wfpipe::pipeline::Pipeline| -> f64 { p.instances.iter().filter(|i| i.spec.kind == "train-flow").map(|i| i.flops.unwrap()).sum() };
    let mut flows = 0;
    for (d, s) in dense.instances.iter().zip(&sparse.instances) {
        assert_eq!(d.id, s.id);
        if s.spec.kind == "train-flow" {
            flows += 1;
            assert_eq!(d.spec.params.str("attention").unwrap(), "dense", "{}", d.id);
            assert_eq!(s.spec.params.str("attention").unwrap(), "layer-blocks", "{}", s.id);
            assert_ne!(d.key, s.key, "{}", s.id);
        } else if !s.spec.kind.starts_with("sample") && !["evaluate", "finetune", "table", "figure", "claim", "barriers"].contains(&s.spec.kind.as_str()) {
            // Upstream of every flow (collect, align, canonicalize, toy-data): untouched.
            assert_eq!(d.key, s.key, "{}", s.id);
        }
    }
    // toy 1, UCI 3 + 6 (no OT without alignment), MNIST 2 + 4, model size 3 + 6.
    assert_eq!(flows, 25, "train-flow instances of thesis.toml");
    assert!(flops(&sparse) < flops(&dense) / 10.0, "sparse {} vs dense {}", flops(&sparse), flops(&dense));
}

#[test]
fn a_stage_pattern_that_reaches_no_parameter_is_an_error() {
    let thesis = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/thesis.toml");
    let Err(err) = ops::load(&thesis, &["mnist-*.atention=\"layer-blocks\"".to_owned()]) else { panic!("a misspelt key loaded") };
    let err = err.to_string();
    assert!(err.contains("no stage matching `mnist-*` has a parameter `atention`"), "{err}");
}
