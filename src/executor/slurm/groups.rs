//! Grouping the instances of one stage into job arrays.
//!
//! Instances of a stage with the same resources become one array (split under the array
//! limit) when their dependencies allow it: either every instance waits for the same jobs
//! (`afterok`), or task `t` waits exactly for task `t` of the same upstream arrays
//! (`aftercorr`, the usual fan-out). Otherwise instances with identical dependencies are
//! grouped together.

use std::collections::{BTreeMap, HashMap};

use wfpipe_stages::kind::Resources;

use super::client::JobId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dependency {
    None,
    /// Wait until all these jobs (or tasks, or whole arrays) completed successfully.
    AfterOk(Vec<String>),
    /// Task `t` waits for task `t` of each of these arrays.
    AfterCorr(Vec<String>),
}

impl Dependency {
    pub fn flag(&self) -> Option<String> {
        match self {
            Dependency::None => None,
            Dependency::AfterOk(ids) => Some(format!("--dependency=afterok:{}", ids.join(":"))),
            Dependency::AfterCorr(ids) => Some(format!("--dependency=aftercorr:{}", ids.join(":"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub resources: Resources,
    /// Instance indices; position = array task id.
    pub members: Vec<usize>,
    pub dependency: Dependency,
}

/// `members`: (instance, resources, jobs it waits for), in instance order.
/// `array_sizes`: tasks of arrays submitted by this run, to write `123` instead of
/// listing all of `123_0 ... 123_n`.
pub fn group(members: &[(usize, Resources, Vec<JobId>)], limit: usize, array_sizes: &HashMap<String, usize>) -> Vec<Group> {
    let limit = limit.max(1);
    let mut by_res: Vec<(Resources, Vec<&(usize, Resources, Vec<JobId>)>)> = Vec::new();
    for m in members {
        match by_res.iter_mut().find(|(r, _)| *r == m.1) {
            Some((_, v)) => v.push(m),
            None => by_res.push((m.1, vec![m])),
        }
    }
    let mut out = Vec::new();
    for (resources, list) in by_res {
        let same = list.windows(2).all(|w| w[0].2 == w[1].2);
        if same {
            let dep = after_ok(&list[0].2, array_sizes);
            for chunk in list.chunks(limit) {
                out.push(Group { resources, members: chunk.iter().map(|m| m.0).collect(), dependency: dep.clone() });
            }
            continue;
        }
        for chunk in list.chunks(limit) {
            if let Some(bases) = corresponding(chunk) {
                out.push(Group { resources, members: chunk.iter().map(|m| m.0).collect(), dependency: Dependency::AfterCorr(bases) });
                continue;
            }
            // Fall back: one array per distinct dependency set.
            let mut by_deps: BTreeMap<&Vec<JobId>, Vec<usize>> = BTreeMap::new();
            for m in chunk {
                by_deps.entry(&m.2).or_default().push(m.0);
            }
            let mut subgroups: Vec<(&Vec<JobId>, Vec<usize>)> = by_deps.into_iter().collect();
            subgroups.sort_by_key(|(_, v)| v[0]);
            for (deps, idx) in subgroups {
                out.push(Group { resources, members: idx, dependency: after_ok(deps, array_sizes) });
            }
        }
    }
    out
}

fn after_ok(deps: &[JobId], array_sizes: &HashMap<String, usize>) -> Dependency {
    if deps.is_empty() {
        return Dependency::None;
    }
    // Whole arrays of this run collapse to their id.
    let mut per_base: BTreeMap<&str, usize> = BTreeMap::new();
    for d in deps {
        if d.0.contains('_') {
            *per_base.entry(d.base()).or_default() += 1;
        }
    }
    let mut ids: Vec<String> = Vec::new();
    for d in deps {
        let base = d.base();
        let whole = d.0.contains('_') && array_sizes.get(base).is_some_and(|&n| per_base.get(base) == Some(&n));
        let id = if whole { base.to_owned() } else { d.0.clone() };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Dependency::AfterOk(ids)
}

/// Task `t` of the chunk waits exactly for task `t` of the same arrays.
fn corresponding(chunk: &[&(usize, Resources, Vec<JobId>)]) -> Option<Vec<String>> {
    let mut bases: Option<Vec<String>> = None;
    for (t, m) in chunk.iter().enumerate() {
        if m.2.is_empty() {
            return None;
        }
        let mut mine = Vec::new();
        for d in &m.2 {
            let (base, task) = d.0.split_once('_')?;
            if task.parse::<usize>().ok()? != t {
                return None;
            }
            mine.push(base.to_owned());
        }
        mine.sort();
        match &bases {
            None => bases = Some(mine),
            Some(b) if *b == mine => {}
            Some(_) => return None,
        }
    }
    bases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Resources {
        Resources::default()
    }
    fn j(s: &str) -> JobId {
        JobId(s.to_owned())
    }

    #[test]
    fn a_sweep_without_dependencies_is_one_array_split_under_the_limit() {
        let m: Vec<_> = (0..50).map(|i| (i, r(), vec![])).collect();
        let g = group(&m, 20, &HashMap::new());
        assert_eq!(g.iter().map(|g| g.members.len()).collect::<Vec<_>>(), vec![20, 20, 10]);
        assert!(g.iter().all(|g| g.dependency == Dependency::None));
    }

    #[test]
    fn fan_out_uses_aftercorr_and_gather_waits_for_whole_arrays() {
        let m: Vec<_> = (0..3).map(|i| (10 + i, r(), vec![j(&format!("7_{i}"))])).collect();
        let g = group(&m, 100, &HashMap::new());
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].dependency, Dependency::AfterCorr(vec!["7".into()]));
        let sizes: HashMap<String, usize> = [("8".to_owned(), 3)].into();
        let gather = vec![(20, r(), vec![j("8_0"), j("8_1"), j("8_2"), j("9")])];
        let g = group(&gather, 100, &sizes);
        assert_eq!(g[0].dependency.flag().unwrap(), "--dependency=afterok:8:9");
    }

    #[test]
    fn misaligned_dependencies_and_other_resources_split() {
        let big = Resources { cpus: 4, ..r() };
        let m = vec![(0, r(), vec![j("7_1")]), (1, r(), vec![j("7_0")]), (2, big, vec![])];
        let g = group(&m, 100, &HashMap::new());
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].members, vec![0]);
        assert_eq!(g[0].dependency, Dependency::AfterOk(vec!["7_1".into()]));
        assert_eq!(g[2].resources.cpus, 4);
    }
}
