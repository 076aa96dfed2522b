//! The pipeline's graph in one place: an order of the stages in which each follows what
//! it reads (or the cycle that rules one out), and over instances, who reads each, what
//! lies downstream of a failure and what a target needs upstream. Instances are indexed in
//! topological order and name their inputs by index ([`Reads`]).

use std::collections::{BTreeMap, VecDeque};

/// A node of the instance graph: the indices of the nodes it reads.
pub trait Reads {
    fn reads(&self) -> impl Iterator<Item = usize> + '_;
}

/// Nodes `0..n` ordered so that every edge `(from, to)` runs forward, or, when the edges
/// form a cycle, a shortest cycle as a path that ends where it began.
pub fn order(n: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let mut graph = petgraph::graphmap::DiGraphMap::<usize, ()>::new();
    for i in 0..n {
        graph.add_node(i);
    }
    for &(from, to) in edges {
        graph.add_edge(from, to, ());
    }
    petgraph::algo::toposort(&graph, None).map_err(|cycle| find_cycle(&graph, cycle.node_id()))
}

/// A cycle through `start` as a path of nodes that ends where it began.
fn find_cycle(graph: &petgraph::graphmap::DiGraphMap<usize, ()>, start: usize) -> Vec<usize> {
    // Breadth-first search from start back to start gives a shortest cycle.
    let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for m in graph.neighbors(n) {
            if m == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = prev[&cur];
                }
                path.push(start);
                let n = path.len();
                path[1..n - 1].reverse();
                return path;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

/// For each instance, the instances that read it (directly).
pub fn dependents(instances: &[impl Reads]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); instances.len()];
    for (i, inst) in instances.iter().enumerate() {
        for u in inst.reads() {
            out[u].push(i);
        }
    }
    out
}

/// Every instance downstream of `from` (transitively), `from` excluded.
pub fn downstream(dependents: &[Vec<usize>], from: usize) -> Vec<usize> {
    let mut seen = vec![false; dependents.len()];
    let mut stack = vec![from];
    let mut out = Vec::new();
    while let Some(n) = stack.pop() {
        for &d in &dependents[n] {
            if !seen[d] {
                seen[d] = true;
                out.push(d);
                stack.push(d);
            }
        }
    }
    out
}

/// `roots` and the instances they read, directly or not, breadth first (nearest first),
/// each once. A node for which `enter` is false is neither listed nor looked through.
pub fn upstream(instances: &[impl Reads], roots: impl IntoIterator<Item = usize>, enter: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut seen = vec![false; instances.len()];
    let mut queue: VecDeque<usize> = roots.into_iter().collect();
    let mut out = Vec::new();
    while let Some(i) = queue.pop_front() {
        if std::mem::replace(&mut seen[i], true) || !enter(i) {
            continue;
        }
        out.push(i);
        queue.extend(instances[i].reads());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_every_edge_forward_and_names_a_shortest_cycle() {
        let edges = [(2, 0), (0, 1), (2, 1), (3, 2)];
        let order = order(4, &edges).expect("acyclic");
        let pos = |n: usize| order.iter().position(|&m| m == n).unwrap();
        assert!(edges.iter().all(|&(a, b)| pos(a) < pos(b)), "{order:?}");
        // 0 -> 1 -> 2 -> 0 and the longer 0 -> 3 -> 4 -> 1 -> 2 -> 0.
        let cycle = super::order(5, &[(0, 1), (1, 2), (2, 0), (0, 3), (3, 4), (4, 1)]).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        for w in cycle.windows(2) {
            assert!([(0, 1), (1, 2), (2, 0)].contains(&(w[0], w[1])), "{cycle:?}");
        }
    }

    #[test]
    fn readers_downstream_and_upstream_follow_the_inputs() {
        // toy -> flow[lr=0.001], flow[lr=0.002] -> samples of each.
        let text = "[stage.toy]\nkind = \"toy-data\"\n\n[stage.flow]\nkind = \"train-flow\"\nweights = \"toy\"\niterations = 10\nmatrix.lr = [0.001, 0.002]\n\n[stage.draw]\nkind = \"sample\"\nflow = \"flow\"\ncount = 4\n".to_owned();
        let p = crate::pipeline::load_str(std::path::Path::new("dag.toml"), text, &[], &crate::kinds::Registry::standard()).expect("pipeline loads");
        let id = |i: usize| p.instances[i].id.as_str();
        let named = |ids: &[usize]| ids.iter().map(|&i| id(i)).collect::<Vec<_>>();
        let find = |name: &str| p.instances.iter().position(|i| i.id == name).unwrap_or_else(|| panic!("no {name} in {:?}", named(&(0..p.instances.len()).collect::<Vec<_>>())));
        let deps = dependents(&p.instances);
        let toy = find("toy");
        let mut down = named(&downstream(&deps, toy));
        down.sort();
        assert_eq!(down.len(), 4, "{down:?}");
        let draws: Vec<usize> = (0..p.instances.len()).filter(|&i| p.instances[i].spec.kind == "sample").collect();
        assert_eq!(draws.len(), 2);
        for &d in &draws {
            assert!(downstream(&deps, d).is_empty());
            let up = upstream(&p.instances, [d], |_| true);
            assert_eq!(up.len(), 3, "{:?}", named(&up));
            assert_eq!(up[0], d, "the root first");
            assert_eq!(*up.last().unwrap(), toy, "nearest first: the flow before the data");
            assert_eq!(upstream(&p.instances, [d], |i| i != toy).len(), 2, "a node not entered is not looked through");
        }
    }
}
