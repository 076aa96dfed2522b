//! End to end: sweeps, fan-out, caching, re-running exactly what changed.

mod common;
use common::*;

#[test]
fn first_run_computes_each_instance_once_and_second_run_nothing() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    let o = p.run(&["run", "pipelines/demo.toml"]);
    assert_ok(&o);
    assert_eq!(
        p.computed(),
        vec!["gen[N=1]", "gen[N=2]", "gen[N=3]", "join", "shout[N=1]", "shout[N=2]", "shout[N=3]"]
    );
    p.clear_counter();
    let o = p.run(&["run", "pipelines/demo.toml"]);
    assert_ok(&o);
    assert!(p.computed().is_empty(), "second run computed {:?}", p.computed());
    assert!(text(&o).contains("7 cached, 0 to run"), "{}", text(&o));
    // The gathered output holds every swept value, in instance order.
    let plan = p.run(&["plan", "pipelines/demo.toml"]);
    assert_ok(&plan);
    assert!(text(&plan).contains("7 cached, 0 to run"), "{}", text(&plan));
    // The JSON forms of plan, status and cache ls, for scripts.
    let json = |args: &[&str]| -> serde_json::Value {
        let o = p.run(args);
        assert_ok(&o);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", text(&o)))
    };
    let plan = json(&["plan", "pipelines/demo.toml", "--format", "json"]);
    let instances = plan["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 7);
    assert!(instances.iter().all(|i| i["cached"] == true && i["key"].as_str().unwrap().len() == 32));
    assert_eq!(instances.iter().find(|i| i["id"] == "gen[N=2]").unwrap()["axes"]["N"], "2");
    assert_eq!(plan["per_kind"]["command"]["instances"], 7);
    let status = json(&["status", "pipelines/demo.toml", "--format", "json"]);
    assert_eq!((status["instances"].as_u64(), status["cached"].as_u64(), status["not_run"].as_u64()), (Some(7), Some(7), Some(0)));
    let ls = json(&["cache", "ls", "--format", "json"]);
    assert_eq!(ls.as_array().unwrap().len(), 7, "{ls}");
    assert!(ls.as_array().unwrap().iter().all(|e| e["kind"] == "command" && e["bytes"].as_u64().unwrap() > 0));
    // `why` given a stage lists its instances and their state.
    let why = p.run(&["why", "pipelines/demo.toml", "shout"]);
    assert_ok(&why);
    let t = text(&why);
    assert!(t.contains("`shout` names 3 instances:"), "{t}");
    for n in 1..=3 {
        assert!(t.contains(&format!("  shout[N={n}]  cached")), "{t}");
    }
}

#[test]
fn changing_one_parameter_reruns_exactly_the_affected_instances() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    p.clear_counter();
    // Change the sweep value N=3 -> N=4: gen[N=4], shout[N=4] and join are affected.
    let changed = SWEEP.replace(r#"["1", "2", "3"]"#, r#"["1", "2", "4"]"#);
    p.write("pipelines/demo.toml", &changed);
    let plan = p.run(&["plan", "pipelines/demo.toml"]);
    assert_ok(&plan);
    let t = text(&plan);
    assert!(t.contains("4 cached, 3 to run"), "{t}");
    assert!(t.contains("input `deps` changed (shout[N=4])"), "{t}");
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    assert_eq!(p.computed(), vec!["gen[N=4]", "join", "shout[N=4]"]);

    // A changed parameter of a non-swept stage: plan names it with old and new value.
    p.clear_counter();
    let changed2 = changed.replace(r#"STYLE = "upper""#, r#"STYLE = "loud""#);
    p.write("pipelines/demo.toml", &changed2);
    let why = p.run(&["why", "pipelines/demo.toml", "shout[N=1]"]);
    assert_ok(&why);
    assert!(text(&why).contains("parameter `env` changed {STYLE=upper} -> {STYLE=loud}"), "{}", text(&why));
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    assert_eq!(p.computed(), vec!["join", "shout[N=1]", "shout[N=2]", "shout[N=4]"]);
}

#[test]
fn set_overrides_and_renames_reuse_the_cache() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    assert_ok(&p.run(&["run", "pipelines/demo.toml"]));
    p.clear_counter();
    // Renaming a stage changes no key.
    let renamed = SWEEP.replace("[stage.join]", "[stage.gather-all]");
    p.write("pipelines/renamed.toml", &renamed);
    assert_ok(&p.run(&["run", "pipelines/renamed.toml"]));
    assert!(p.computed().is_empty(), "{:?}", p.computed());
    // --set changes a parameter from the command line.
    let o = p.run(&["run", "pipelines/demo.toml", "--set", "shout.env.STYLE=quiet"]);
    assert_ok(&o);
    assert_eq!(p.computed(), vec!["join", "shout[N=1]", "shout[N=2]", "shout[N=3]"]);
}

#[test]
fn failures_skip_dependents_and_keep_going_runs_the_rest() {
    let p = Project::new();
    p.write(
        "pipelines/fail.toml",
        r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "if [ $N = 2 ]; then echo boom >&2; exit 3; fi; echo $N > a.txt"]
outputs = ["a.txt"]
matrix.env.N = ["1", "2"]

[stage.b]
kind = "command"
input = "a"
cmd = ["sh", "-c", "cp $WFPIPE_INPUT/a.txt b.txt"]
outputs = ["b.txt"]
"#,
    );
    let o = p.run(&["run", "pipelines/fail.toml", "--keep-going", "-j", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("a[N=2]: `sh` exited with status 3"), "{t}");
    assert!(t.contains("not run because a[N=2] failed: b[N=2]"), "{t}");
    assert!(t.contains("log: "), "{t}");
    // The log holds what the program printed.
    let log_line = t.lines().find(|l| l.trim_start().starts_with("log: ")).unwrap();
    let log = std::fs::read_to_string(log_line.trim_start().trim_start_matches("log: ")).unwrap();
    assert!(log.contains("boom"), "{log}");
    // The branch that did not fail finished.
    let status = p.run(&["status", "pipelines/fail.toml"]);
    assert!(text(&status).contains("2 cached, 0 running, 1 failed, 1 not run"), "{}", text(&status));
}

#[test]
fn dag_renders_in_three_formats() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    let dot = p.run(&["dag", "pipelines/demo.toml", "--format", "dot"]);
    assert_ok(&dot);
    assert!(text(&dot).contains("digraph \"demo\""));
    assert_eq!(text(&dot).matches(" -> ").count(), 6);
    let mm = p.run(&["dag", "pipelines/demo.toml", "--format", "mermaid"]);
    assert!(text(&mm).starts_with("flowchart LR"));
    let tx = p.run(&["dag", "pipelines/demo.toml"]);
    assert!(text(&tx).contains("<- deps: shout[N=3]"), "{}", text(&tx));
}

#[test]
fn input_files_are_hashed_into_the_key() {
    let p = Project::new();
    p.write("scripts/make.sh", "echo v1 > r.txt\n");
    p.write(
        "pipelines/f.toml",
        r#"
[stage.s]
kind = "command"
cmd = ["sh", "{project}/scripts/make.sh"]
inputs = ["scripts/make.sh"]
outputs = ["r.txt"]
"#,
    );
    assert_ok(&p.run(&["run", "pipelines/f.toml"]));
    p.write("scripts/make.sh", "echo v2 > r.txt\n");
    let plan = p.run(&["plan", "pipelines/f.toml"]);
    assert!(text(&plan).contains("file `scripts/make.sh` of `inputs` changed"), "{}", text(&plan));
}

/// An entry computed before `train-flow` had `lr_schedule` and `warmup` (its manifest lacks
/// them): `why` names what really changed and not the parameters the kind gained since.
#[test]
fn why_does_not_blame_parameters_a_kind_gained_at_their_default() {
    let p = Project::new();
    let flow = |iterations: u32| {
        format!(
            "[stage.toy]\nkind = \"toy-data\"\ncount = 16\n\n[stage.flow]\nkind = \"train-flow\"\nweights = \"toy\"\n\
             iterations = {iterations}\nbatch_size = 4\nd_model = 2\nlayers = 1\nsource_std = 1.0\n"
        )
    };
    p.write("pipelines/flow.toml", &flow(2));
    assert_ok(&p.run(&["run", "pipelines/flow.toml"]));
    let manifests: Vec<_> = walk(&p.cache().join("entries")).into_iter().filter(|f| f.ends_with("manifest.json")).collect();
    let mut edited = 0;
    for path in manifests {
        let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if m["kind"] == "train-flow" {
            let params = m["params"].as_object_mut().unwrap();
            assert!(params.remove("lr_schedule").is_some() && params.remove("warmup").is_some());
            tamper(&path, &serde_json::to_vec(&m).unwrap());
            edited += 1;
        }
    }
    assert_eq!(edited, 1);
    p.write("pipelines/flow.toml", &flow(3));
    let why = p.run(&["why", "pipelines/flow.toml", "flow"]);
    assert_ok(&why);
    let t = text(&why);
    assert!(t.contains("parameter `iterations` changed 2 -> 3"), "{t}");
    assert!(!t.contains("parameter `lr_schedule`") && !t.contains("parameter `warmup`"), "{t}");
}

/// A run target may name some axes of a stage: `s[A=1]` runs every instance with A=1.
#[test]
fn targets_select_instances_by_some_of_their_axes() {
    let p = Project::new();
    p.write(
        "pipelines/grid.toml",
        "[stage.s]\nkind = \"command\"\ncmd = [\"sh\", \"-c\", \"echo $WFPIPE_INSTANCE >> $COUNTER\"]\nmatrix.env.A = [\"1\", \"2\"]\nmatrix.env.B = [\"x\", \"y\"]\n",
    );
    let dry = p.run(&["run", "--dry-run", "pipelines/grid.toml", "s[B=y]"]);
    assert_ok(&dry);
    assert!(text(&dry).contains("2 instances, 0 cached, 2 to run") && !text(&dry).contains("B=x"), "{}", text(&dry));
    assert_ok(&p.run(&["run", "pipelines/grid.toml", "s[A=1]"]));
    assert_eq!(p.computed(), vec!["s[A=1,B=x]", "s[A=1,B=y]"]);
    let o = p.run(&["run", "pipelines/grid.toml", "s[A=3]"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no stage or instance `s[A=3]`"), "{}", text(&o));
}
