//! `pipelines/smoke.toml` end to end: every stage kind on tiny configurations, then the
//! report and its tables, checked for finite numbers; a second run computes nothing.

mod common;
use common::*;
use std::path::Path;

fn finite_numbers(csv: &str) -> usize {
    let mut n = 0;
    for line in csv.lines().skip(1) {
        for cell in line.split(',') {
            if let Ok(x) = cell.trim().parse::<f64>() {
                assert!(x.is_finite(), "non-finite number in\n{csv}");
                n += 1;
            } else {
                let lower = cell.trim().to_ascii_lowercase();
                assert!(lower != "nan" && !lower.contains("inf"), "non-finite value `{cell}` in\n{csv}");
            }
        }
    }
    n
}

#[test]
fn smoke_pipeline_runs_end_to_end_with_a_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = Project::new();
    let pipeline = p.write("pipelines/smoke.toml", &std::fs::read_to_string(root.join("pipelines/smoke.toml")).unwrap());
    let o = p.run(&["run", pipeline.to_str().unwrap(), "-j", "2"]);
    assert_ok(&o);
    let report = p.path().join("reports/smoke/index.md");
    let index = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("{}: {e}\n{}", report.display(), text(&o)));
    assert!(index.contains("uci-table"), "{index}");
    let tables: Vec<_> = walk(&p.path().join("reports/smoke")).into_iter().filter(|f| f.extension().is_some_and(|e| e == "csv")).collect();
    assert!(!tables.is_empty(), "no csv tables in the report");
    for t in &tables {
        assert!(finite_numbers(&std::fs::read_to_string(t).unwrap()) > 0, "{} has no numbers", t.display());
    }
    let figures: Vec<_> = walk(&p.path().join("reports/smoke")).into_iter().filter(|f| f.extension().is_some_and(|e| e == "png")).collect();
    assert!(figures.len() >= 2, "figures: {figures:?}");
    // A second run computes nothing.
    let again = p.run(&["run", pipeline.to_str().unwrap()]);
    assert_ok(&again);
    assert!(text(&again).contains(", 0 to run"), "{}", text(&again));
}


#[test]
fn shipped_pipelines_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["smoke", "quick", "thesis", "ablations"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_wfpipe"))
            .args(["validate", &format!("pipelines/{name}.toml")])
            .current_dir(root)
            .output()
            .unwrap();
        assert_ok(&o);
    }
}
