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
    /// Instance indices.
    pub members: Vec<usize>,
    /// The array task id of each member (`aftercorr` groups reuse their upstream's ids).
    pub tasks: Vec<usize>,
    pub dependency: Dependency,
}

type Member = (usize, Resources, Vec<JobId>);

/// `members`: (instance, resources, jobs it waits for), in instance order.
/// `array_sizes`: tasks of arrays submitted by this run, to write `123` instead of
/// listing all of `123_0 ... 123_n`.
pub fn group(members: &[Member], limit: usize, array_sizes: &HashMap<String, usize>) -> Vec<Group> {
    let limit = limit.max(1);
    let mut by_res: Vec<(Resources, Vec<&Member>)> = Vec::new();
    for m in members {
        match by_res.iter_mut().find(|(r, _)| *r == m.1) {
            Some((_, v)) => v.push(m),
            None => by_res.push((m.1, vec![m])),
        }
    }
    let mut out = Vec::new();
    let plain = |resources: Resources, idx: &[usize], dependency: Dependency| Group {
        resources,
        members: idx.to_vec(),
        tasks: (0..idx.len()).collect(),
        dependency,
    };
    for (resources, list) in by_res {
        if list.windows(2).all(|w| w[0].2 == w[1].2) {
            let dep = after_ok(&list[0].2, array_sizes);
            let idx: Vec<usize> = list.iter().map(|m| m.0).collect();
            for chunk in idx.chunks(limit) {
                out.push(plain(resources, chunk, dep.clone()));
            }
            continue;
        }
        // Members waiting on task t of the same arrays: one array per upstream set, with
        // the upstream's task ids, so `aftercorr` pairs them.
        let mut corr: BTreeMap<Vec<String>, Vec<(usize, usize)>> = BTreeMap::new();
        let mut rest: Vec<&Member> = Vec::new();
        for m in &list {
            match corr_key(&m.2) {
                Some((bases, task)) => corr.entry(bases).or_default().push((task, m.0)),
                None => rest.push(m),
            }
        }
        for (bases, mut v) in corr {
            v.sort();
            // Two members on the same upstream task go to different arrays.
            let mut layers: Vec<Vec<(usize, usize)>> = Vec::new();
            for x in v {
                match layers.iter_mut().find(|l| l.last().is_some_and(|y| y.0 != x.0)) {
                    Some(l) => l.push(x),
                    None => layers.push(vec![x]),
                }
            }
            for layer in layers {
                for chunk in layer.chunks(limit) {
                    if chunk.len() == 1 {
                        let deps: Vec<JobId> = bases.iter().map(|b| JobId(format!("{b}_{}", chunk[0].0))).collect();
                        out.push(plain(resources, &[chunk[0].1], after_ok(&deps, array_sizes)));
                    } else {
                        out.push(Group {
                            resources,
                            members: chunk.iter().map(|x| x.1).collect(),
                            tasks: chunk.iter().map(|x| x.0).collect(),
                            dependency: Dependency::AfterCorr(bases.clone()),
                        });
                    }
                }
            }
        }
        // The rest: one array per distinct dependency set.
        let mut by_deps: BTreeMap<&Vec<JobId>, Vec<usize>> = BTreeMap::new();
        for m in rest {
            by_deps.entry(&m.2).or_default().push(m.0);
        }
        for (deps, idx) in by_deps {
            for chunk in idx.chunks(limit) {
                out.push(plain(resources, chunk, after_ok(deps, array_sizes)));
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

/// Every dependency is task `t` of some array, the same `t`: (arrays, t).
fn corr_key(deps: &[JobId]) -> Option<(Vec<String>, usize)> {
    let mut task = None;
    let mut bases = Vec::new();
    for d in deps {
        let (base, t) = d.0.split_once('_')?;
        let t: usize = t.parse().ok()?;
        if task.is_some_and(|x| x != t) {
            return None;
        }
        task = Some(t);
        bases.push(base.to_owned());
    }
    bases.sort();
    bases.dedup();
    Some((bases, task?))
}

/// `--array` indices: `0-19`, or `0-2,5,7-9` for sparse ids.
pub fn array_spec(tasks: &[usize]) -> String {
    let mut sorted = tasks.to_vec();
    sorted.sort_unstable();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { sorted[i].to_string() } else { format!("{}-{}", sorted[i], sorted[j]) });
        i = j + 1;
    }
    parts.join(",")
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
        // Members in another order than their upstream tasks, split over two arrays.
        let m: Vec<_> = [(10, "7_1"), (11, "7_0"), (12, "8_0"), (13, "7_2"), (14, "8_1")].iter().map(|(i, d)| (*i, r(), vec![j(d)])).collect();
        let g = group(&m, 100, &HashMap::new());
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].dependency, Dependency::AfterCorr(vec!["7".into()]));
        assert_eq!((g[0].members.clone(), g[0].tasks.clone()), (vec![11, 10, 13], vec![0, 1, 2]));
        assert_eq!(g[1].dependency, Dependency::AfterCorr(vec!["8".into()]));
        assert_eq!(array_spec(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        let sizes: HashMap<String, usize> = [("8".to_owned(), 3)].into();
        let gather = vec![(20, r(), vec![j("8_0"), j("8_1"), j("8_2"), j("9")])];
        let g = group(&gather, 100, &sizes);
        assert_eq!(g[0].dependency.flag().unwrap(), "--dependency=afterok:8:9");
    }

    #[test]
    fn misaligned_dependencies_and_other_resources_split() {
        let big = Resources { cpus: 4, ..r() };
        let m = vec![(0, r(), vec![j("7_1"), j("9")]), (1, r(), vec![j("7_0")]), (2, big, vec![])];
        let g = group(&m, 100, &HashMap::new());
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].members, vec![1]);
        assert_eq!(g[0].dependency, Dependency::AfterOk(vec!["7_0".into()]));
        assert_eq!(g[1].dependency, Dependency::AfterOk(vec!["7_1".into(), "9".into()]));
        assert_eq!(g[2].resources.cpus, 4);
    }
}
