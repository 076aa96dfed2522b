//! Crash safety (SIGKILL at 20 seeded points, then resume), two concurrent runs on one
//! cache, and corruption caught by `cache verify`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// 10 x (gen, shout) + join: 21 instances, each doing a little real work.
fn pipeline() -> String {
    SWEEP
        .replace(r#"["1", "2", "3"]"#, r#"["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]"#)
        .replace("echo gen $N $WFPIPE_SEED > out.txt;", "seq 1 20000 | md5sum > out.txt; echo gen $N $WFPIPE_SEED >> out.txt;")
}

/// Every output file of every entry, by instance name.
fn outputs(p: &Project) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let entries = p.cache().join("entries");
    for shard in std::fs::read_dir(&entries).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let dir = entry.unwrap().path();
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            for f in m["outputs"].as_array().unwrap() {
                let rel = f["path"].as_str().unwrap();
                out.insert(format!("{}/{rel}", m["instance"].as_str().unwrap()), std::fs::read(dir.join("out").join(rel)).unwrap());
            }
        }
    }
    out
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn sigkill_at_twenty_points_then_resume_matches_an_uninterrupted_run() {
    let reference = Project::new();
    reference.write("pipelines/p.toml", &pipeline());
    assert_ok(&reference.run(&["run", "pipelines/p.toml", "-j", "2"]));
    let expected = outputs(&reference);
    assert_eq!(expected.len(), 21);

    let p = Project::new();
    p.write("pipelines/p.toml", &pipeline());
    // Seeded xorshift: where to kill, counted in finished computations.
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20 {
        let before = lines(&p.counter());
        let target = before + (next() % 3) as usize;
        let mut child = p.cmd(&["run", "pipelines/p.toml", "-j", "2", "-q"]).spawn().unwrap();
        // Wait for the seeded point (a polled condition), or for the run to end.
        loop {
            if lines(&p.counter()) >= target || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    // Resume to the end.
    let o = p.run(&["run", "pipelines/p.toml", "-j", "2"]);
    assert_ok(&o);
    assert_eq!(outputs(&p), expected, "outputs differ from the uninterrupted run");
    let verify = p.run(&["cache", "verify"]);
    assert_ok(&verify);
    assert!(text(&verify).contains("21 entries: 0 corrupt"), "{}", text(&verify));
    // No instance was computed twice.
    let computed = p.computed();
    let mut unique = computed.clone();
    unique.dedup();
    assert_eq!(computed, unique, "an instance was computed twice");
    assert_eq!(computed.len(), 21);
}

#[test]
fn two_concurrent_runs_compute_every_key_exactly_once() {
    let p = Project::new();
    p.write("pipelines/p.toml", &pipeline());
    let a = p.cmd(&["run", "pipelines/p.toml", "-j", "2", "-q"]).spawn().unwrap();
    let b = p.cmd(&["run", "pipelines/p.toml", "-j", "2", "-q"]).spawn().unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_ok(&oa);
    assert_ok(&ob);
    let computed = p.computed();
    let mut unique = computed.clone();
    unique.dedup();
    assert_eq!(computed, unique, "a key was computed twice");
    assert_eq!(computed.len(), 21);
}

#[test]
fn a_flipped_byte_is_quarantined_and_only_that_entry_recomputed() {
    let p = Project::new();
    p.write("pipelines/p.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/p.toml"]));
    let before = outputs(&p);
    // Find gen[N=2]'s output and flip a byte.
    let entries = p.cache().join("entries");
    let mut target = None;
    for shard in std::fs::read_dir(&entries).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let dir = entry.unwrap().path();
            let m = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
            if m.contains("\"instance\": \"gen[N=2]\"") {
                target = Some(dir.join("out/out.txt"));
            }
        }
    }
    let target = target.expect("gen[N=2] entry");
    let mut bytes = std::fs::read(&target).unwrap();
    bytes[0] ^= 0x01;
    tamper(&target, &bytes);
    let v = p.run(&["cache", "verify"]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(text(&v).contains("1 corrupt") && text(&v).contains("does not match its recorded blake3"), "{}", text(&v));
    p.clear_counter();
    let plan = p.run(&["plan", "pipelines/p.toml"]);
    assert!(text(&plan).contains("entry missing (removed or quarantined)"), "{}", text(&plan));
    assert_ok(&p.run(&["run", "pipelines/p.toml"]));
    assert_eq!(p.computed(), vec!["gen[N=2]"]);
    assert_eq!(outputs(&p), before);
    assert_ok(&p.run(&["cache", "verify"]));
}

#[test]
fn a_corrupt_input_is_reported_not_used() {
    let p = Project::new();
    p.write("pipelines/p.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/p.toml", "gen"]));
    // Corrupt every gen output, then ask for the downstream stages.
    for shard in std::fs::read_dir(p.cache().join("entries")).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let f = entry.unwrap().path().join("out/out.txt");
            tamper(&f, b"tampered");
        }
    }
    let o = p.run(&["run", "pipelines/p.toml", "--keep-going"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is corrupt") && text(&o).contains("wfpipe cache verify"), "{}", text(&o));
}
