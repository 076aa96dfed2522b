//! Tables, figures and reports end to end: `command` stages write CSV rows, `[table.*]`
//! and `[figure.*]` stages aggregate and plot them, `wfpipe report` rebuilds the report.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use wfpipe::table::{frame_to_rows, read_csv};
use wfpipe_stages::kind::{Row, Value};

/// A 2 x 3 sweep (A in 1,2; B in 1,2,3). Each instance writes two per-network rows,
/// acc = 10A + B and 10A + B + 2 with loss = B, and one summary row the tables filter out.
const MATRIX: &str = r#"
[pipeline]
name = "demo"

[stage.measure]
kind = "command"
cmd = ["sh", "-c", "printf 'level,acc,loss\nnet,%s,%s\nnet,%s,%s\nsummary,100,0\n' $((A*10+B)) $B $((A*10+B+2)) $B > metrics.csv"]
outputs = ["metrics.csv"]
matrix.env.A = ["1", "2"]
matrix.env.B = ["1", "2", "3"]

[table.by-a]
from = "measure"
rows = ["A"]
metrics = ["acc", "loss"]
filter = { level = "net" }
min_max = true
title = "Accuracy by A"

[table.by-a-and-b]
from = "measure"
rows = ["A", "B"]
metrics = ["acc"]
filter = { level = "net" }
"#;

fn read_table(path: &Path) -> Vec<Row> {
    frame_to_rows(&read_csv(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
}

fn num(row: &Row, col: &str) -> f64 {
    row.get(col).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number in `{col}`: {row:?}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn table_over_a_two_by_three_matrix_groups_and_summarises() {
    let p = Project::new();
    p.write("pipelines/demo.toml", MATRIX);
    let o = p.run(&["run", "pipelines/demo.toml"]);
    assert_ok(&o);
    let by_a = read_table(&p.path().join("reports/demo/tables/by-a.csv"));
    assert_eq!(by_a.len(), 2, "{by_a:?}");
    for (row, a) in by_a.iter().zip([1.0, 2.0]) {
        assert_eq!(num(row, "A"), a);
        // acc over B = 1..3: {10A+B, 10A+B+2} -> mean 10A + 3, sample variance 10/5 = 2.
        assert!(close(num(row, "acc_mean"), 10.0 * a + 3.0), "{row:?}");
        assert!(close(num(row, "acc_std"), 2f64.sqrt()), "{row:?}");
        assert_eq!(num(row, "acc_count"), 6.0);
        assert_eq!((num(row, "acc_min"), num(row, "acc_max")), (10.0 * a + 1.0, 10.0 * a + 5.0));
        // loss = B twice each: mean 2, sample variance 4/5.
        assert!(close(num(row, "loss_mean"), 2.0) && close(num(row, "loss_std"), 0.8f64.sqrt()), "{row:?}");
    }
    let by_ab = read_table(&p.path().join("reports/demo/tables/by-a-and-b.csv"));
    assert_eq!(by_ab.len(), 6);
    for row in &by_ab {
        let (a, b) = (num(row, "A"), num(row, "B"));
        assert!(close(num(row, "acc_mean"), 10.0 * a + b + 1.0), "{row:?}");
        assert!(close(num(row, "acc_std"), 2f64.sqrt()), "{row:?}");
        assert_eq!(num(row, "acc_count"), 2.0);
    }
    let groups: Vec<(f64, f64)> = by_ab.iter().map(|r| (num(r, "A"), num(r, "B"))).collect();
    assert_eq!(groups, [(1.0, 1.0), (1.0, 2.0), (1.0, 3.0), (2.0, 1.0), (2.0, 2.0), (2.0, 3.0)]);
    let index = std::fs::read_to_string(p.path().join("reports/demo/index.md")).unwrap();
    assert!(index.contains("| 1 | 6 | 13.000 ± 1.414 | 11.000 | 15.000 | 2.000 ± 0.894 | 1.000 | 3.000 |"), "{index}");
    assert!(index.contains("sample standard deviation (ddof = 1)"), "{index}");
}

const REFERENCED: &str = r#"
[pipeline]
name = "ref"

[stage.flow]
kind = "command"
cmd = ["sh", "-c", "printf 'accuracy,loss\n0.95,0.05\n0.97,0.07\n' > metrics.csv"]
outputs = ["metrics.csv"]
matrix.env.geometry = ["euclidean", "geometric"]

[table.table-7-1]
from = "flow"
rows = ["geometry"]
metrics = ["accuracy", "loss"]
reference = "thesis:table-7.1"
reference_match = { aligned = "false", coupling = "independent" }
"#;

#[test]
fn reference_puts_the_thesis_value_and_difference_beside_ours() {
    let p = Project::new();
    p.write("pipelines/ref.toml", REFERENCED);
    assert_ok(&p.run(&["run", "pipelines/ref.toml"]));
    let rows = read_table(&p.path().join("reports/ref/tables/table-7-1.csv"));
    assert_eq!(rows.len(), 2);
    let expected = [("euclidean", "Euclidean", 0.998, 0.006, 0.101), ("geometric", "Geometric", 0.992, 0.011, 0.019)];
    for (row, (geometry, label, acc, acc_std, loss)) in rows.iter().zip(expected) {
        assert_eq!(row.get("geometry"), Some(&Value::Str(geometry.into())));
        assert_eq!(row.get("thesis_row"), Some(&Value::Str(label.into())));
        assert!(close(num(row, "accuracy_mean"), 0.96));
        assert!(close(num(row, "accuracy_thesis"), acc) && close(num(row, "accuracy_thesis_std"), acc_std), "{row:?}");
        assert!(close(num(row, "accuracy_diff"), 0.96 - acc), "{row:?}");
        assert!(close(num(row, "loss_diff"), 0.06 - loss), "{row:?}");
    }
    let index = std::fs::read_to_string(p.path().join("reports/ref/index.md")).unwrap();
    assert!(index.contains("| euclidean | Euclidean | 2 | 0.960 ± 0.014 | 0.998 ± 0.006 | -0.038 |"), "{index}");
}

#[test]
fn unknown_reference_is_a_pipeline_error_naming_the_known_ones() {
    let p = Project::new();
    p.write("pipelines/ref.toml", &REFERENCED.replace("thesis:table-7.1", "thesis:table-9.9"));
    let o = p.run(&["validate", "pipelines/ref.toml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("thesis:table-7.2"), "{}", text(&o));
}

const FIGURES: &str = r#"
[pipeline]
name = "figs"

[stage.sweep]
kind = "command"
cmd = ["sh", "-c", "printf 'steps,accuracy,a,b,barrier\n8,0.%s1,1,2,0.%s\n16,0.%s5,1,3,0.2\n64,0.%s8,2,3,0.3\n8,0.%s3,1,2,0.1\n' $G $G $G $G $G > metrics.csv"]
outputs = ["metrics.csv"]
matrix.env.G = ["6", "7", "8"]
replicates = 2

[figure.steps]
from = "sweep"
x = "steps"
y = "accuracy"
series = ["G"]
log_x = true
title = "Accuracy versus Euler steps"
xlabel = "Euler steps"
ylabel = "test accuracy"
reference = "thesis:figure-7.4"

[figure.spread]
from = "sweep"
plot = "histogram"
x = "accuracy"
series = ["G"]
bins = 12

[figure.barriers]
from = "sweep"
plot = "heatmap"
x = "a"
y = "b"
z = "barrier"
series = ["G"]
width = 1200
height = 500
"#;

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    use image::GenericImageView;
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().dimensions()
}

fn svg_root(path: &Path) -> (String, String, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    let root = doc.root_element();
    let attr = |n: &str| root.attribute(n).unwrap_or_default().to_owned();
    (root.tag_name().name().to_owned(), attr("width"), attr("height"))
}

fn files_below(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn figures_are_valid_svg_and_png_of_the_requested_size() {
    let p = Project::new();
    p.write("pipelines/figs.toml", FIGURES);
    assert_ok(&p.run(&["run", "pipelines/figs.toml"]));
    let dir = p.path().join("reports/figs/figures");
    for (name, w, h) in [("steps", 1000, 600), ("spread", 1000, 600), ("barriers", 1200, 500)] {
        assert_eq!(png_size(&dir.join(format!("{name}.png"))), (w, h), "{name}");
        assert_eq!(svg_root(&dir.join(format!("{name}.svg"))), ("svg".into(), w.to_string(), h.to_string()), "{name}");
    }
    let svg = std::fs::read_to_string(dir.join("steps.svg")).unwrap();
    for label in ["Accuracy versus Euler steps", "Euler steps", "test accuracy", "G=6", "G=8", "SGD-optimized (thesis)"] {
        assert!(svg.contains(label), "steps.svg lacks `{label}`");
    }
    let index = std::fs::read_to_string(p.path().join("reports/figs/index.md")).unwrap();
    assert!(index.contains("![Accuracy versus Euler steps](figures/steps.png)"), "{index}");
    assert!(index.contains("[figures/steps.svg](figures/steps.svg)"), "{index}");
}

#[test]
fn report_rebuilds_identical_files_from_the_cache_alone() {
    let p = Project::new();
    p.write("pipelines/figs.toml", FIGURES);
    p.write("pipelines/demo.toml", MATRIX);
    // Before anything is computed the report names what is missing.
    let o = p.run(&["report", "pipelines/demo.toml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not in the cache: by-a, by-a-and-b"), "{}", text(&o));
    for pipeline in ["figs", "demo"] {
        let file = format!("pipelines/{pipeline}.toml");
        assert_ok(&p.run(&["run", &file]));
        let dir = p.path().join("reports").join(pipeline);
        let first = files_below(&dir);
        assert!(first.keys().any(|f| f.ends_with("index.md")), "{first:?}");
        std::fs::remove_dir_all(p.path().join("reports")).unwrap();
        let o = p.run(&["report", &file]);
        assert_ok(&o);
        assert_eq!(files_below(&dir), first, "`wfpipe report {file}` wrote different files");
        let index = String::from_utf8(first[&dir.join("index.md")].clone()).unwrap();
        assert!(index.contains("## Provenance"), "{index}");
        assert!(!index.contains("not cached"), "{index}");
    }
}

/// Two runs of one pipeline that finish together both write its report: each must
/// succeed, and what is left is one whole report with no staging folder beside it.
#[test]
fn concurrent_report_writers_leave_one_whole_report() {
    let p = Project::new();
    p.write("pipelines/figs.toml", FIGURES);
    assert_ok(&p.run(&["run", "pipelines/figs.toml"]));
    let reports = p.path().join("reports");
    let first = files_below(&reports.join("figs"));
    let writers: Vec<_> =
        (0..8).map(|_| p.cmd(&["report", "pipelines/figs.toml"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()).collect();
    for w in writers {
        assert_ok(&w.wait_with_output().unwrap());
    }
    assert_eq!(files_below(&reports.join("figs")), first);
    let mut left: Vec<String> = std::fs::read_dir(&reports).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.retain(|n| !n.ends_with(".lock"));
    assert_eq!(left, ["figs"]);
}

/// acc = 10A and loss = 4 - A for A in 1..3; `broken` fails, so the table over it is
/// never computed.
const CLAIMS: &str = r#"
[pipeline]
name = "claims"

[stage.measure]
kind = "command"
cmd = ["sh", "-c", "printf 'acc,loss\n%s,%s\n' $((A*10)) $((4-A)) > metrics.csv"]
outputs = ["metrics.csv"]
matrix.env.A = ["1", "2", "3"]

[table.by-a]
from = "measure"
rows = ["A"]
metrics = ["acc", "loss"]

[claim.acc-rises]
table = "by-a"
says = "accuracy rises with A"
check = "rises"
metric = "acc"
over = "A"

[claim.a2-below-a3]
table = "by-a"
says = "A = 2 is less accurate than A = 3"
check = "below"
metric = "acc"
row = { A = "2" }
than = { A = "3" }

[claim.loss-above-two]
table = "by-a"
says = "the loss at A = 3 stays above 2"
check = "above"
metric = "loss"
row = { A = "3" }
value = [2.0]
why = "the program writes loss 1 at A = 3"
"#;

const BROKEN: &str = r#"
[stage.broken]
kind = "command"
cmd = ["sh", "-c", "exit 3"]
outputs = ["metrics.csv"]

[table.of-broken]
from = "broken"
metrics = ["acc"]

[claim.broken-is-accurate]
table = "of-broken"
says = "the broken stage is accurate"
check = "at-least"
metric = "acc"
value = [0.5]
"#;

#[test]
fn claims_hold_or_not_and_the_report_opens_with_their_verdicts() {
    let p = Project::new();
    p.write("pipelines/claims.toml", CLAIMS);
    let o = p.run(&["run", "pipelines/claims.toml"]);
    assert_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3 claims: holds 2, does not hold 1, not computed 0"), "{err}");
    assert!(err.contains("acc-rises") && err.contains("1: 10.000, 2: 20.000, 3: 30.000"), "{err}");
    let index = std::fs::read_to_string(p.path().join("reports/claims/index.md")).unwrap();
    let verdicts = index.find("## Verdicts").expect("a verdicts section");
    assert!(verdicts < index.find("## Tables").unwrap(), "the verdicts come first");
    let line = |claim: &str| index.lines().find(|l| l.starts_with(&format!("| {claim} |"))).unwrap_or_else(|| panic!("no row for {claim}:\n{index}")).to_owned();
    assert!(line("acc-rises").contains("**holds**"), "{}", line("acc-rises"));
    assert!(line("a2-below-a3").contains("| 20.000 (n 1) | 30.000 (n 1) (A=3) | **holds** |"), "{}", line("a2-below-a3"));
    let above = line("loss-above-two");
    assert!(above.contains("| the loss at A = 3 stays above 2 | 1.000 (n 1) | 2 | **does not hold** | loss_mean 1.000 - 2.000 = -1.000; the program writes loss 1 at A = 3 |"), "{above}");
    let status = p.run(&["status", "pipelines/claims.toml"]);
    assert!(text(&status).contains("3 claims: holds 2, does not hold 1, not computed 0"), "{}", text(&status));
}

#[test]
fn a_claim_whose_table_is_missing_is_not_computed() {
    let p = Project::new();
    p.write("pipelines/claims.toml", &format!("{CLAIMS}{BROKEN}"));
    let o = p.run(&["run", "--keep-going", "pipelines/claims.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("4 claims: holds 2, does not hold 1, not computed 1"), "{err}");
    assert!(err.contains("broken-is-accurate  not run: `broken` not in the cache"), "{err}");
    let status = text(&p.run(&["status", "pipelines/claims.toml"]));
    assert!(status.contains("4 claims: holds 2, does not hold 1, not computed 1"), "{status}");
}

/// A headless browser for the HTML report: `WFPIPE_CHROMIUM`, else the first of the usual
/// names on the PATH.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("WFPIPE_CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The DOM after the page's script ran, as the browser serializes it.
fn rendered_dom(browser: &std::path::Path, page: &std::path::Path, fragment: &str) -> String {
    let profile = wfpipe::scratch::ScratchDir::new("test").unwrap();
    let o = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .expect("the browser starts");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The first cell of each body row of the last table.
fn last_table_first_cells(dom: &str) -> Vec<String> {
    let table = &dom[dom.rfind("<table").expect("a table")..];
    let body = &table[table.find("<tbody>").expect("a table body")..table.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            let cell = &row[row.find("<td").unwrap()..];
            let start = cell.find('>').unwrap() + 1;
            cell[start..cell.find("</td>").unwrap()].to_owned()
        })
        .collect()
}

#[test]
fn the_html_report_renders_in_a_browser_with_inline_figures_and_sortable_tables() {
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: no chromium on the PATH (apt-get install chromium, or set WFPIPE_CHROMIUM)");
        return;
    };
    let p = Project::new();
    p.write("pipelines/figs.toml", FIGURES);
    assert_ok(&p.run(&["run", "pipelines/figs.toml"]));
    let page = p.path().join("reports/figs/index.html");
    let dom = rendered_dom(&browser, &page, "");
    // The script ran: one sortable table (the provenance), and every figure is inline SVG.
    assert!(dom.contains("<body data-sortable=\"1\">"), "{dom}");
    assert_eq!(dom.matches("<figure><svg").count(), 3, "{dom}");
    assert!(!dom.contains("<img"), "a figure stayed a PNG link");
    for label in ["Accuracy versus Euler steps", "Provenance"] {
        assert!(dom.contains(label), "the page lacks `{label}`");
    }
    // Sorting by the address: the provenance's instances in both orders.
    let unsorted = last_table_first_cells(&dom);
    let mut ascending = unsorted.clone();
    ascending.sort();
    let descending: Vec<String> = ascending.iter().rev().cloned().collect();
    assert_ne!(ascending, descending, "{unsorted:?}");
    assert_eq!(last_table_first_cells(&rendered_dom(&browser, &page, "#sort=0:0")), ascending);
    let sorted = rendered_dom(&browser, &page, "#sort=0:0:desc");
    assert_eq!(last_table_first_cells(&sorted), descending);
    assert!(sorted.contains("aria-sort=\"descending\""), "the sorted column is not marked");
}
