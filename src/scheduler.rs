//! Resource accounting for the local executor: which ready instance may start now.

use wfpipe_stages::kind::Resources;

/// The machine's budget.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub jobs: usize,
    pub cpus: u32,
    pub gpus: u32,
    pub mem_mb: u64,
}

/// What is in use, and which GPU ids are free.
#[derive(Debug)]
pub struct Slots {
    pub capacity: Capacity,
    running: usize,
    cpus: u32,
    mem_mb: u64,
    free_gpus: Vec<u32>,
}

impl Slots {
    pub fn new(capacity: Capacity) -> Slots {
        Slots { capacity, running: 0, cpus: 0, mem_mb: 0, free_gpus: (0..capacity.gpus).rev().collect() }
    }

    /// A request shrunk to what the machine has, so that a large instance can still run
    /// alone instead of waiting forever.
    pub fn fit(&self, r: Resources) -> Resources {
        Resources {
            cpus: r.cpus.clamp(1, self.capacity.cpus.max(1)),
            gpus: r.gpus.min(self.capacity.gpus),
            mem_mb: r.mem_mb.min(self.capacity.mem_mb),
            time_min: r.time_min,
        }
    }

    /// Take the resources if they are free; returns the GPU ids assigned.
    pub fn try_take(&mut self, r: Resources) -> Option<Vec<u32>> {
        let r = self.fit(r);
        let fits = self.running < self.capacity.jobs
            && self.cpus + r.cpus <= self.capacity.cpus.max(1)
            && self.mem_mb + r.mem_mb <= self.capacity.mem_mb
            && self.free_gpus.len() >= r.gpus as usize;
        if !fits {
            return None;
        }
        self.running += 1;
        self.cpus += r.cpus;
        self.mem_mb += r.mem_mb;
        let n = self.free_gpus.len() - r.gpus as usize;
        let mut ids = self.free_gpus.split_off(n);
        ids.reverse();
        Some(ids)
    }

    pub fn give_back(&mut self, r: Resources, gpus: Vec<u32>) {
        let r = self.fit(r);
        self.running -= 1;
        self.cpus -= r.cpus;
        self.mem_mb -= r.mem_mb;
        self.free_gpus.extend(gpus);
        self.free_gpus.sort_unstable_by(|a, b| b.cmp(a));
    }

    pub fn running(&self) -> usize {
        self.running
    }
}

/// `todo` in the order to start it: most work downstream first. An instance's weight is
/// its estimated work (`work[i]`, 0 when unknown) plus the weights of its dependents, so a
/// collection feeding ten flows starts before one long flow, and a long flow before a short
/// one; starting them early keeps every CPU busy near the end of a run instead of leaving
/// one long job to run alone. (A result gathered by several instances counts once per
/// path to it; gathered results are tables and figures, whose work is small.) Ties keep
/// the given order. Instances are indexed in topological order.
pub fn most_work_first(todo: &[usize], work: &[f64], dependents: &[Vec<usize>]) -> Vec<usize> {
    let mut weight = vec![0.0f64; work.len()];
    for i in (0..work.len()).rev() {
        weight[i] = work[i].max(0.0) + dependents[i].iter().map(|&d| weight[d]).sum::<f64>();
    }
    let mut order = todo.to_vec();
    order.sort_by(|&a, &b| weight[b].total_cmp(&weight[a]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_work_downstream_starts_first_and_ties_keep_their_order() {
        // 0 -> 1 (a chain, 1 + 1), 2 (a leaf, 5), 3 and 4 (unknown work, 0).
        let dependents = vec![vec![1], vec![], vec![], vec![], vec![]];
        let work = [1.0, 1.0, 5.0, 0.0, 0.0];
        assert_eq!(most_work_first(&[0, 1, 2, 3, 4], &work, &dependents), vec![2, 0, 1, 3, 4]);
        // A cheap instance in front of an expensive one inherits its weight.
        let work = [1.0, 10.0, 5.0, 0.0, 0.0];
        assert_eq!(most_work_first(&[0, 1, 2, 3, 4], &work, &dependents), vec![0, 1, 2, 3, 4]);
        // A cheap instance feeding two of 3 outweighs a leaf of 5.
        let dependents = vec![vec![1, 2], vec![], vec![], vec![]];
        let work = [0.1, 3.0, 3.0, 5.0];
        assert_eq!(most_work_first(&[0, 1, 2, 3], &work, &dependents), vec![0, 3, 1, 2]);
    }

    fn res(cpus: u32, gpus: u32) -> Resources {
        Resources { cpus, gpus, mem_mb: 100, time_min: 0 }
    }

    #[test]
    fn gpus_are_assigned_exclusively_and_returned() {
        let mut s = Slots::new(Capacity { jobs: 8, cpus: 8, gpus: 2, mem_mb: 10_000 });
        let a = s.try_take(res(1, 1)).unwrap();
        let b = s.try_take(res(1, 1)).unwrap();
        assert_ne!(a, b);
        assert!(s.try_take(res(1, 1)).is_none());
        s.give_back(res(1, 1), a.clone());
        assert_eq!(s.try_take(res(1, 1)).unwrap(), a);
    }

    #[test]
    fn oversized_requests_run_alone() {
        let mut s = Slots::new(Capacity { jobs: 4, cpus: 2, gpus: 0, mem_mb: 1000 });
        assert!(s.try_take(res(16, 0)).is_some());
        assert!(s.try_take(res(1, 0)).is_none());
    }
}
