//! GPUs without a GPU: `plan` says which instances would take one and what the machine
//! offers, and `run --backend cuda` where CUDA cannot run fails before any instance starts,
//! naming what is missing.

mod common;
use common::*;

const TWO: &str = r#"
[stage.cpu]
kind = "command"
cmd = ["sh", "-c", "echo cpu >> $COUNTER; echo c > o.txt"]
outputs = ["o.txt"]

[stage.gpu]
kind = "command"
cmd = ["sh", "-c", "echo gpu >> $COUNTER; echo g > o.txt"]
outputs = ["o.txt"]
resources = { gpus = 1 }
"#;

/// What this build says when CUDA cannot run on a machine without a driver.
fn why_no_cuda() -> &'static str {
    if cfg!(feature = "cuda") {
        "the CUDA driver library (libcuda"
    } else {
        "built without CUDA"
    }
}

#[test]
fn plan_names_the_gpu_instances_and_the_devices() {
    let p = Project::new();
    p.write("pipelines/two.toml", TWO);
    let o = p.run(&["plan", "pipelines/two.toml"]);
    assert_ok(&o);
    let t = text(&o);
    assert!(t.contains("gpus=1"), "{t}");
    let devices = t.lines().find(|l| l.starts_with("devices: ")).unwrap_or_else(|| panic!("no devices line:\n{t}"));
    assert!(devices.contains("GPUs as /dev/nvidia* files"), "{devices}");
    assert!(t.contains("1 instances request a GPU"), "{t}");

    let o = p.run(&["plan", "pipelines/two.toml", "--format", "json"]);
    assert_ok(&o);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(doc["devices"]["gpu_instances"], 1);
    assert!(doc["devices"]["gpu_files"].is_u64());
    if doc["devices"]["cuda"]["devices"] == 0 {
        let why = doc["devices"]["cuda"]["unavailable"].as_str().expect("a reason");
        assert!(why.contains(why_no_cuda()) || cfg!(feature = "cuda"), "{why}");
    }
}

#[test]
fn backend_cuda_without_cuda_fails_before_any_instance() {
    if cfg!(feature = "cuda") && wfpipe_stages::backend::cuda_devices().is_ok() {
        eprintln!("SKIPPED: this machine runs CUDA; the failure path needs one that cannot");
        return;
    }
    let p = Project::new();
    p.write("pipelines/two.toml", TWO);
    let o = p.run(&["run", "pipelines/two.toml", "--backend", "cuda"]);
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("--backend cuda"), "{t}");
    assert!(t.contains(why_no_cuda()), "{t}");
    assert!(t.contains("no instance was started"), "{t}");
    assert!(p.computed().is_empty(), "instances ran: {:?}", p.computed());
    // The CPU backend runs both; the GPU request is then only a slot the CPU fills.
    assert_ok(&p.run(&["run", "pipelines/two.toml"]));
    assert_eq!(p.computed(), ["cpu", "gpu"]);
}
