//! The verdicts of a pipeline's claims, read from the cache: what `run` prints at its end,
//! what `status` counts and what the report opens with. A claim that is not in the cache
//! is "not computed", with the nearest inputs that are missing.

use std::fmt::Write as _;

use crate::cache::Cache;
use crate::kinds::claim::{Outcome, VERDICT_TABLE};
use crate::pipeline::{Instance, Pipeline};
use crate::report::summary_table::escape;
use crate::table;

const CLAIM_KIND: &str = "claim";

/// One claim's verdict as found.
#[derive(Clone, Debug)]
pub struct Found {
    pub claim: String,
    pub says: String,
    pub outcome: Outcome,
    pub ours: String,
    pub against: String,
    pub detail: String,
}

pub fn has_claims(p: &Pipeline) -> bool {
    p.instances.iter().any(|i| i.spec.kind == CLAIM_KIND)
}

/// Every claim of the pipeline, in file order.
pub fn collect(p: &Pipeline, cache: &Cache) -> Vec<Found> {
    p.instances.iter().filter(|i| i.spec.kind == CLAIM_KIND).map(|i| found(p, cache, i)).collect()
}

fn found(p: &Pipeline, cache: &Cache, inst: &Instance) -> Found {
    let (says, why) = crate::kinds::claim::says_and_why(&inst.spec.params);
    let missing = |detail: String| Found {
        claim: inst.id.clone(),
        says: says.clone(),
        outcome: Outcome::NotComputed,
        ours: String::new(),
        against: String::new(),
        detail,
    };
    if !cache.is_cached(&inst.key) {
        let absent = missing_inputs(p, cache, inst);
        return missing(if absent.is_empty() {
            "not run yet".to_owned()
        } else {
            format!("not run: {} not in the cache", absent.join(", "))
        });
    }
    let path = cache.out_dir(&inst.key).join(format!("{VERDICT_TABLE}.parquet"));
    let row = match table::read_parquet(&path) {
        Ok(frame) => table::frame_to_rows(&frame).into_iter().next(),
        Err(e) => return missing(format!("cannot read {}: {e}", path.display())),
    };
    let Some(row) = row else { return missing(format!("{} holds no verdict", path.display())) };
    let text = |c: &str| row.get(c).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    Found {
        claim: inst.id.clone(),
        says,
        outcome: Outcome::parse(&text("verdict")).unwrap_or(Outcome::NotComputed),
        ours: text("ours"),
        against: text("against"),
        detail: if why.is_empty() { text("detail") } else { format!("{}; {why}", text("detail")) },
    }
}

/// The instances upstream of `inst` that are not cached and whose own inputs all are: where
/// the chain was broken.
fn missing_inputs(p: &Pipeline, cache: &Cache, inst: &Instance) -> Vec<String> {
    let uncached = |i: usize| !cache.is_cached(&p.instances[i].key);
    let broken = crate::dag::upstream(&p.instances, inst.inputs.values().flatten().copied(), uncached);
    let mut out: Vec<String> = broken
        .into_iter()
        .filter(|&i| !p.instances[i].inputs.values().flatten().any(|&j| uncached(j)))
        .map(|i| format!("`{}`", p.instances[i].id))
        .collect();
    out.sort();
    out
}

/// `N claims: holds 5, does not hold 2, not computed 1`.
pub fn counts(found: &[Found]) -> String {
    let parts: Vec<String> = Outcome::ALL
        .iter()
        .map(|o| format!("{} {}", o.name(), found.iter().filter(|f| f.outcome == *o).count()))
        .collect();
    format!("{} claim{}: {}", found.len(), if found.len() == 1 { "" } else { "s" }, parts.join(", "))
}

/// The report's opening section.
pub fn markdown(found: &[Found]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Verdicts\n");
    let _ = writeln!(md, "{}. Each claim is computed from the table it names; none was tuned to hold.\n", counts(found));
    let _ = writeln!(md, "| claim | the thesis says | ours | against | verdict | how |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for f in found {
        let verdict = match f.outcome {
            Outcome::Holds => "**holds**".to_owned(),
            other => format!("**{}**", other.name()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {verdict} | {} |",
            escape(&f.claim),
            escape(&f.says),
            escape(&f.ours),
            escape(&f.against),
            escape(&f.detail)
        );
    }
    md
}

/// What `run` prints at its end.
pub fn summary(found: &[Found]) -> String {
    let mut out = format!("{}\n", counts(found));
    let width = found.iter().map(|f| f.claim.len()).max().unwrap_or(0);
    for f in found {
        let _ = write!(out, "  {:<13} {:<width$}", f.outcome.name(), f.claim);
        if f.ours.is_empty() {
            let _ = writeln!(out, "  {}", f.detail);
        } else {
            let _ = writeln!(out, "  {} against {}", f.ours, f.against);
        }
    }
    out
}
