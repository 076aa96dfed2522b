//! The command line's habits: examples in every `--help`, shell completions, `-q`, and
//! JSON events a script can order in time.

mod common;
use common::*;

const ONE: &str = r#"
[stage.a]
kind = "command"
cmd = ["sh", "-c", "echo a > o.txt"]
outputs = ["o.txt"]
"#;

#[test]
fn every_subcommand_help_shows_an_example() {
    let p = Project::new();
    let commands = ["run", "validate", "plan", "status", "why", "dag", "report", "export", "kinds", "data", "cache", "bench", "completions"];
    for command in commands {
        let o = p.run(&[command, "--help"]);
        assert_ok(&o);
        let t = text(&o);
        let examples = t.split("Examples:\n").nth(1).unwrap_or_else(|| panic!("`wfpipe {command} --help` has no examples:\n{t}"));
        assert!(examples.lines().next().unwrap().trim_start().starts_with(&format!("wfpipe {command}")), "{t}");
    }
}

#[test]
fn completions_name_the_subcommands() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = p.run(&["completions", shell]);
        assert_ok(&o);
        let script = String::from_utf8_lossy(&o.stdout);
        for sub in ["run", "plan", "why", "cache"] {
            assert!(script.contains(sub), "{shell} completions lack `{sub}`");
        }
    }
    assert!(!p.run(&["completions", "tcsh"]).status.success());
}

#[test]
fn quiet_prints_nothing_and_json_events_carry_times() {
    let p = Project::new();
    p.write("pipelines/one.toml", ONE);
    let o = p.run(&["-q", "run", "pipelines/one.toml"]);
    assert_ok(&o);
    assert_eq!(text(&o), "", "-q printed something");
    assert!(!p.run(&["-q", "-v", "plan", "pipelines/one.toml"]).status.success(), "-q and -v together are refused");
    p.write("pipelines/one.toml", &ONE.replace("echo a", "echo b"));
    let o = p.run(&["run", "pipelines/one.toml", "--log-format", "json"]);
    assert_ok(&o);
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(events.iter().any(|e| e["event"] == "finished"), "{}", text(&o));
    let times: Vec<&str> = events.iter().filter(|e| e.get("event").is_some()).map(|e| e["time"].as_str().expect("every event has a time")).collect();
    for t in &times {
        // 2026-12-03T16:30:01.123Z
        assert_eq!((t.len(), &t[10..11], &t[19..20], &t[23..]), (24, "T", ".", "Z"), "{t}");
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "events out of order: {times:?}");
}

#[test]
fn an_axis_whose_values_give_identical_outputs_is_named() {
    let p = Project::new();
    // `B` reaches the output, `A` does not.
    p.write(
        "pipelines/axes.toml",
        r#"
[stage.s]
kind = "command"
cmd = ["sh", "-c", "echo $B > o.txt"]
outputs = ["o.txt"]
matrix.env.A = ["1", "2", "3"]
matrix.env.B = ["x", "y"]
"#,
    );
    let o = p.run(&["run", "pipelines/axes.toml"]);
    assert_ok(&o);
    let t = text(&o);
    assert!(
        t.contains("note: axis `A` of `s` had no effect: its 3 values gave byte-identical outputs (each of 2 sets of instances that differ only there)"),
        "{t}"
    );
    assert!(!t.contains("`B`"), "{t}");
    // Said again on a run that computes nothing, and as a JSON event.
    let o = p.run(&["run", "pipelines/axes.toml", "--log-format", "json"]);
    let event = String::from_utf8_lossy(&o.stderr).lines().find(|l| l.contains("no_effect")).map(str::to_owned);
    let event: serde_json::Value = serde_json::from_str(&event.expect("a no_effect event")).unwrap();
    assert_eq!((event["stage"].as_str(), event["axes"][0].as_str(), event["values"].as_u64()), (Some("s"), Some("A"), Some(3)));
}
