//! Sweep axes without effect: a stage axis (or `zip` group) whose values, all else equal,
//! gave byte-identical outputs. Usually a parameter the stage ignores in that setting
//! (a noise scale of 0 next to a sampler that adds none, a seed the stage never draws
//! from); worth a line after `run`, since every value costs a computation.

use std::collections::BTreeMap;

use crate::pipeline::Pipeline;

/// One axis (or zip group) of one stage whose values changed no output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoEffect {
    pub stage: String,
    pub axes: Vec<String>,
    pub values: usize,
    /// Sets of instances that differ in this axis only, all compared.
    pub comparisons: usize,
}

impl NoEffect {
    pub fn line(&self) -> String {
        let names = self.axes.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(" + ");
        let what = if self.axes.len() == 1 { "axis" } else { "axes" };
        let sets = if self.comparisons == 1 { "its instances".to_owned() } else { format!("each of {} sets of instances that differ only there", self.comparisons) };
        format!("note: {what} {names} of `{}` had no effect: its {} values gave byte-identical outputs ({sets})", self.stage, self.values)
    }
}

/// The axes without effect, given each cached instance's output digest (`None`: not cached).
pub fn find(p: &Pipeline, digest: impl Fn(usize) -> Option<String>) -> Vec<NoEffect> {
    let mut found = Vec::new();
    for stage in &p.stages {
        for group in &stage.axes {
            let names: Vec<String> = group.axes.iter().map(|a| a.name.clone()).collect();
            let values = group.axes.first().map_or(0, |a| a.values.len());
            if values < 2 {
                continue;
            }
            // Instances keyed by every other axis: each set differs only in this group.
            let mut sets: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for &i in &stage.instances {
                let rest: Vec<String> =
                    p.instances[i].spec.axes.iter().filter(|(k, _)| !names.contains(k)).map(|(k, v)| format!("{k}={v}")).collect();
                sets.entry(rest.join(",")).or_default().push(i);
            }
            let mut comparisons = 0;
            let mut identical = true;
            for members in sets.values().filter(|m| m.len() >= 2) {
                let digests: Option<Vec<String>> = members.iter().map(|&i| digest(i)).collect();
                let Some(digests) = digests else { continue };
                comparisons += 1;
                identical &= digests.windows(2).all(|w| w[0] == w[1]);
            }
            if identical && comparisons > 0 {
                found.push(NoEffect { stage: stage.name.clone(), axes: names, values, comparisons });
            }
        }
    }
    found
}

/// An entry's outputs as one comparable string: every file's path and hash.
pub fn outputs_digest(cache: &crate::cache::Cache, key: &str) -> Option<String> {
    if !cache.is_cached(key) {
        return None;
    }
    let m = cache.read_manifest(key).ok()?;
    let mut files: Vec<String> = m.outputs.iter().map(|f| format!("{}:{}", f.path, f.blake3)).collect();
    files.sort();
    Some(files.join("\n"))
}
