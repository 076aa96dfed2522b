//! Every malformed pipeline under tests/fixtures/pipelines/bad is rejected with the
//! message, `file:line:col` and suggestion its header expects, and nothing panics or is
//! written. The whole rendered message is compared with the snapshot beside the file
//! (`NAME.stderr`, the project folder written as `$PROJECT`), as cargo's tests do;
//! `WFPIPE_BLESS=1 cargo test --test bad_pipelines` rewrites the snapshots after a
//! deliberate change of wording.

mod common;
use common::*;
use std::path::Path;

fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_owned))
}

#[test]
fn every_bad_pipeline_reports_message_and_location() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} bad pipelines", files.len());
    let bless = std::env::var_os("WFPIPE_BLESS").is_some();
    let p = Project::new();
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let copy = p.write(&format!("pipelines/{name}"), &text);
        let o = p.run(&["validate", copy.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&o.stderr).into_owned();
        let expect = header(&text, "expect-error").expect("expect-error header");
        let at = header(&text, "expect-at").expect("expect-at header");
        let mut problems = Vec::new();
        if o.status.code() != Some(2) {
            problems.push(format!("exit status {:?}", o.status.code()));
        }
        if out.contains("panicked") {
            problems.push("panicked".into());
        }
        if !out.contains(&expect) {
            problems.push(format!("message `{expect}` missing"));
        }
        if !out.contains(&format!("{name}:{at}")) {
            problems.push(format!("location `{name}:{at}` missing"));
        }
        if let Some(help) = header(&text, "expect-help") {
            if !out.contains(&help) {
                problems.push(format!("help `{help}` missing"));
            }
        }
        if let Some(absent) = header(&text, "expect-not") {
            if out.contains(&absent) {
                problems.push(format!("`{absent}` should not be said"));
            }
        }
        let rendered = out.replace(&p.dir.path().display().to_string(), "$PROJECT");
        let snapshot = file.with_extension("stderr");
        if bless {
            std::fs::write(&snapshot, &rendered).unwrap();
        } else {
            match std::fs::read_to_string(&snapshot) {
                Ok(want) if want == rendered => {}
                Ok(want) => problems.push(format!("differs from {}:\n--- want\n{want}--- got\n{rendered}", snapshot.display())),
                Err(e) => problems.push(format!("no snapshot {} ({e}); WFPIPE_BLESS=1 writes it", snapshot.display())),
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n{out}", problems.join(", ")));
        }
    }
    assert!(
        !p.cache().join("entries").exists()
            || std::fs::read_dir(p.cache().join("entries"))
                .unwrap()
                .count()
                == 0
    );
    assert!(
        failures.is_empty(),
        "{} of {} bad pipelines misreported:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_quote_the_offending_line_with_a_caret() {
    let p = Project::new();
    let f = p.write(
        "pipelines/x.toml",
        "[stage.a]\nkind = \"command\"\ncmd = [\"true\"]\noutputz = [\"x\"]\n",
    );
    let o = p.run(&["validate", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("4 | outputz = [\"x\"]"), "{err}");
    assert!(err.contains("  | ^^^^^^^"), "{err}");
}

#[test]
fn set_overrides_are_checked_too() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    let o = p.run(&[
        "validate",
        "pipelines/demo.toml",
        "--set",
        "shuot.shell=true",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no stage `shuot`") && err.contains("did you mean `shout`?"),
        "{err}"
    );
    let o = p.run(&[
        "validate",
        "pipelines/demo.toml",
        "--set",
        "shout.shell=maybe",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`shell` must be a boolean, found string `\"maybe\"`"),
        "{err}"
    );
}

#[test]
fn a_missing_pipeline_file_is_a_clear_error() {
    let p = Project::new();
    let o = p.run(&["validate", "pipelines/nope.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("cannot read pipeline file pipelines/nope.toml"));
}

/// Generated inputs too large for fixture files: an error past column 65,535 and a dotted
/// key 20,000 levels deep (the TOML parser's recursion limit gives no position).
#[test]
fn huge_lines_and_deep_keys_are_located_not_panics() {
    let p = Project::new();
    let head = "[stage.a]\nkind = \"command\"\ncmd = [\"true\"]\n";
    let cases = [
        (format!("{head}x = \"{}\"; bad\n", "y".repeat(70_000)), "invalid TOML: unexpected key or value", "4:70007"),
        (format!("{head}{} = 1\n", vec!["k"; 20_000].join(".")), "invalid TOML: recursion limit", "4:1"),
    ];
    for (i, (text, message, at)) in cases.iter().enumerate() {
        let file = p.write(&format!("pipelines/huge{i}.toml"), text);
        let o = p.run(&["validate", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{}", &err[..err.len().min(2000)]);
        assert!(!err.contains("panicked"), "{}", &err[..err.len().min(2000)]);
        assert!(err.contains(message) && err.contains(&format!("huge{i}.toml:{at}")), "{}", &err[..err.len().min(2000)]);
        assert!(err.lines().all(|l| l.len() < 300), "a quoted line was not cut to a window");
    }
}

/// Resource budgets that could never run anything are refused before loading anything.
#[test]
fn empty_budgets_are_refused() {
    let p = Project::new();
    p.write("pipelines/demo.toml", SWEEP);
    for (flag, value, why) in [("--jobs", "0", "must be at least 1"), ("--cpus", "0", "not in 1.."), ("--mem-mb", "1", "not in 64..")] {
        let o = p.run(&["run", "pipelines/demo.toml", flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(why), "{flag} {value}: {err}");
    }
    assert!(!p.cache().join("entries").exists(), "a refused run touched the cache");
}
