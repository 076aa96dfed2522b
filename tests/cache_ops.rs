//! `cache ls`, `du`, `gc` (dry run, apply, size cap) and Ctrl-C.

mod common;
use common::*;

#[test]
fn gc_removes_only_entries_no_named_pipeline_reaches() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    // A second pipeline with one extra, different instance.
    let other = SWEEP.replace(r#"["1", "2", "3"]"#, r#"["1", "2", "3", "9"]"#);
    p.write("pipelines/other.toml", &other);
    assert_ok(&p.run(&["run", "pipelines/other.toml"]));
    let ls = p.run(&["cache", "ls"]);
    assert_eq!(text(&ls).lines().count(), 10, "{}", text(&ls)); // 3+3+1 and gen/shout[N=9] and a new join
    let dry = p.run(&["cache", "gc", "pipelines/demo.toml"]);
    assert_ok(&dry);
    assert!(text(&dry).contains("would remove 3 entries"), "{}", text(&dry));
    assert_eq!(text(&p.run(&["cache", "ls"])).lines().count(), 10, "dry run removed something");
    let work_dirs = || std::fs::read_dir(p.cache().join("work")).unwrap().count();
    assert_eq!(work_dirs(), 10, "one log folder per computed entry");
    assert_ok(&p.run(&["cache", "gc", "pipelines/demo.toml", "--apply"]));
    assert_eq!(text(&p.run(&["cache", "ls"])).lines().count(), 7);
    assert_eq!(work_dirs(), 7, "the removed entries' logs went with them");
    // Everything demo needs is still cached.
    p.clear_counter();
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    assert!(p.computed().is_empty());
    let du = p.run(&["cache", "du"]);
    assert!(text(&du).starts_with("7 entries"), "{}", text(&du));
}

#[test]
fn gc_with_a_size_cap_keeps_what_fits() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    p.write("pipelines/none.toml", "[stage.x]\nkind = \"command\"\ncmd = [\"true\"]\n");
    // A huge cap removes nothing even though nothing is reachable.
    let o = p.run(&["cache", "gc", "pipelines/none.toml", "--max-size", "1G", "--apply"]);
    assert!(text(&o).contains("removed 0 entries"), "{}", text(&o));
    let o = p.run(&["cache", "gc", "pipelines/none.toml", "--max-size", "0", "--apply"]);
    assert!(text(&o).contains("removed 7 entries"), "{}", text(&o));
}

#[test]
fn ctrl_c_stops_children_and_leaves_the_cache_consistent() {
    let p = Project::new();
    // The stage blocks until a file appears, so the interrupt lands mid-computation.
    p.write(
        "pipelines/slow.toml",
        r#"
[stage.wait]
kind = "command"
cmd = ["sh", "-c", "echo started >> $COUNTER; while [ ! -f $COUNTER.go ]; do sleep 0.05; done; echo x > x.txt"]
outputs = ["x.txt"]
matrix.env.N = ["1", "2"]
"#,
    );
    let child = p
        .cmd(&["run", "pipelines/slow.toml", "-j", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while p.computed().len() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(text(&o).contains("interrupted"), "{}", text(&o));
    // Nothing half-written is a result, and a re-run completes.
    let v = p.run(&["cache", "verify"]);
    assert!(text(&v).contains("checked 0 entries"), "{}", text(&v));
    std::fs::write(format!("{}.go", p.counter().display()), "").unwrap();
    assert_ok(&p.run(&["run", "pipelines/slow.toml"]));
    assert_ok(&p.run(&["cache", "verify"]));
}
