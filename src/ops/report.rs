//! `wfpipe report PIPELINE`: `reports/<pipeline>/index.md` and `index.html` from the
//! cache, computing nothing.
//!
//! The report opens with the verdicts of the pipeline's claims (a claim not in the cache
//! is "not computed"), then holds every table (markdown inline, csv beside it) and every figure (PNG
//! embedded, SVG linked) of the pipeline's `table` and `figure` instances, then a
//! provenance table read from the cache manifests of all its instances. Everything in it
//! comes from cached files, never from the clock, so deleting `reports/` and running
//! `wfpipe report` again gives byte-identical files. `wfpipe run` calls [`after_run`].

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use super::{load, open_cache, verdicts, Paths};
use crate::cache::lock::KeyLock;
use crate::cache::{Cache, Manifest};
use crate::kinds::{figure, table};
use crate::pipeline::{Instance, Pipeline};
use crate::report::html;
use crate::report::summary_table::escape;

const TABLE_KIND: &str = "table";
const FIGURE_KIND: &str = "figure";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "pipeline `{pipeline}`: {} table/figure instance(s) are not in the cache: {}; run `wfpipe run` first",
        .missing.len(),
        .missing.join(", ")
    )]
    Missing { pipeline: String, missing: Vec<String> },
    #[error("cannot read the manifest of `{instance}` ({key}): {source}")]
    Manifest { instance: String, key: String, source: std::io::Error },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReportError {
    let path = path.to_owned();
    move |source| ReportError::Io { action, path, source }
}

/// Whether the pipeline has anything a report shows.
pub fn has_outputs(p: &Pipeline) -> bool {
    p.instances.iter().any(is_output) || verdicts::has_claims(p)
}

fn is_output(i: &Instance) -> bool {
    i.spec.kind == TABLE_KIND || i.spec.kind == FIGURE_KIND
}

/// `reports/` beside the project.
pub fn reports_root(p: &Pipeline) -> PathBuf {
    p.project_dir.join("reports")
}

/// The CLI operation: load, open the cache, write the report; prints where it went.
pub fn report(path: &Path, overrides: &[String], cache: Option<PathBuf>) -> anyhow::Result<i32> {
    let (p, _) = load(path, overrides)?;
    let cache = open_cache(&Paths::resolve(cache, None, &p).cache)?;
    let index = write_report(&p, &cache, &reports_root(&p))?;
    println!("{}", index.display());
    Ok(0)
}

/// Called at the end of a successful `wfpipe run`: writes the report when the pipeline has
/// tables or figures and all of them are cached (a run of some targets may not cover them).
pub fn after_run(p: &Pipeline, cache: &Cache, quiet: bool) -> Result<(), ReportError> {
    if !has_outputs(p) || p.instances.iter().filter(|i| is_output(i)).any(|i| !cache.is_cached(&i.key)) {
        return Ok(());
    }
    let index = write_report(p, cache, &reports_root(p))?;
    if !quiet {
        eprintln!("report: {}", index.display());
    }
    Ok(())
}

/// A file name for an instance id: `fig[geometry=ot]` -> `fig_geometry-ot`.
pub fn slug(id: &str) -> String {
    let mut s: String = id
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' => c,
            '=' => '-',
            _ => '_',
        })
        .collect();
    while s.ends_with('_') {
        s.pop();
    }
    s
}

/// Write `<root>/<pipeline>/` afresh; returns the path of its `index.md`.
pub fn write_report(p: &Pipeline, cache: &Cache, root: &Path) -> Result<PathBuf, ReportError> {
    let missing: Vec<String> = p.instances.iter().filter(|i| is_output(i) && !cache.is_cached(&i.key)).map(|i| i.id.clone()).collect();
    if !missing.is_empty() {
        return Err(ReportError::Missing { pipeline: p.name.clone(), missing });
    }
    // Runs of one pipeline that finish together write its report one at a time, so that
    // none removes another's staging folder; the kernel frees the lock of a killed writer.
    fs::create_dir_all(root).map_err(io("creating", root))?;
    let lock = root.join(format!(".{}.lock", p.name));
    let _writer = KeyLock::acquire(&lock).map_err(io("locking", &lock))?;
    let staging = root.join(format!(".{}.partial", p.name));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io("removing", &staging))?;
    }
    let tables_dir = staging.join("tables");
    let figures_dir = staging.join("figures");
    fs::create_dir_all(&tables_dir).map_err(io("creating", &tables_dir))?;
    fs::create_dir_all(&figures_dir).map_err(io("creating", &figures_dir))?;

    let mut md = String::new();
    let file = p.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let _ = writeln!(md, "# Report: {}\n", escape(&p.name));
    let _ = writeln!(
        md,
        "Rebuilt by `wfpipe report` from the cache entries of `{file}`; every number and figure below was read from a cached result.\n"
    );
    if verdicts::has_claims(p) {
        let _ = writeln!(md, "{}", verdicts::markdown(&verdicts::collect(p, cache)));
    }
    let tables: Vec<&Instance> = p.instances.iter().filter(|i| i.spec.kind == TABLE_KIND).collect();
    if !tables.is_empty() {
        let _ = writeln!(md, "## Tables\n");
    }
    for inst in tables {
        let out = cache.out_dir(&inst.key);
        let name = slug(&inst.id);
        let text = fs::read_to_string(out.join(table::MARKDOWN_FILE)).map_err(io("reading", &out.join(table::MARKDOWN_FILE)))?;
        copy(&out.join(format!("{}.csv", table::TABLE_NAME)), &tables_dir.join(format!("{name}.csv")))?;
        let _ = writeln!(md, "### {}\n", escape(&inst.id));
        let _ = writeln!(md, "{}", text.trim_end());
        let _ = writeln!(md, "\nData: [tables/{name}.csv](tables/{name}.csv)\n");
    }
    let figures: Vec<&Instance> = p.instances.iter().filter(|i| i.spec.kind == FIGURE_KIND).collect();
    if !figures.is_empty() {
        let _ = writeln!(md, "## Figures\n");
    }
    for inst in figures {
        let out = cache.out_dir(&inst.key);
        let name = slug(&inst.id);
        for ext in ["png", "svg"] {
            copy(&out.join(format!("{}.{ext}", figure::FIGURE_STEM)), &figures_dir.join(format!("{name}.{ext}")))?;
        }
        let title = inst.spec.params.str("title").ok().filter(|t| !t.is_empty()).unwrap_or(inst.id.as_str()).to_owned();
        let _ = writeln!(md, "### {}\n", escape(&inst.id));
        let _ = writeln!(md, "![{}](figures/{name}.png)\n", title.replace(['[', ']'], ""));
        let _ = writeln!(md, "Vector version: [figures/{name}.svg](figures/{name}.svg)\n");
    }
    provenance(&mut md, p, cache)?;
    let index = staging.join("index.md");
    fs::write(&index, &md).map_err(io("writing", &index))?;
    let svg_for = |link: &str| {
        let svg = link.strip_prefix("figures/")?.strip_suffix(".png")?;
        fs::read_to_string(figures_dir.join(format!("{svg}.svg"))).ok()
    };
    let page = staging.join("index.html");
    fs::write(&page, html::page(&format!("Report: {}", p.name), &md, svg_for)).map_err(io("writing", &page))?;

    // Replace the previous report in one step, so readers never see half of one.
    let dest = root.join(&p.name);
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(io("removing", &dest))?;
    }
    fs::rename(&staging, &dest).map_err(io("moving the report to", &dest))?;
    Ok(dest.join("index.md"))
}

/// A report file is the user's, not the cache's: it is not kept read-only like its source.
fn copy(from: &Path, to: &Path) -> Result<(), ReportError> {
    copy_writable(from, to).map_err(io("copying", from))
}

/// Copy a cache file out as the user's own: writable, unlike the cache's read-only copy.
pub fn copy_writable(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::copy(from, to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))
}

fn provenance(md: &mut String, p: &Pipeline, cache: &Cache) -> Result<(), ReportError> {
    let _ = writeln!(md, "## Provenance\n");
    let _ = writeln!(md, "Every instance of the pipeline, from its cache manifest. Times are when the result was computed (UTC).\n");
    let _ = writeln!(md, "| instance | kind | key | computed (UTC) | duration | backend | threads | host | wfpipe |");
    let _ = writeln!(md, "|---|---|---|---|--:|---|--:|---|---|");
    for inst in &p.instances {
        if !cache.is_cached(&inst.key) {
            let _ = writeln!(md, "| {} | {} | `{}` | not cached | | | | | |", escape(&inst.id), inst.spec.kind, short_key(&inst.key));
            continue;
        }
        let m: Manifest = cache
            .read_manifest(&inst.key)
            .map_err(|source| ReportError::Manifest { instance: inst.id.clone(), key: inst.key.clone(), source })?;
        let _ = writeln!(
            md,
            "| {} | {} v{} | `{}` | {} | {} | {} | {} | {} | {} |",
            escape(&inst.id),
            m.spec.kind,
            m.spec.version,
            short_key(&m.key),
            utc(m.started_unix),
            duration(m.duration_s),
            m.backend,
            m.threads,
            escape(&m.host),
            m.wfpipe_version
        );
    }
    Ok(())
}

fn short_key(key: &str) -> &str {
    &key[..key.len().min(16)]
}

fn duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}

/// `YYYY-MM-DD hh:mm:ss` of a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_format_as_utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400.5), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_000_000.0), "2026-11-18 11:06:40");
    }

    #[test]
    fn slugs_are_plain_file_names() {
        assert_eq!(slug("fig[geometry=ot,steps=8]"), "fig_geometry-ot_steps-8");
        assert_eq!(slug("table-7.1"), "table-7.1");
    }
}
