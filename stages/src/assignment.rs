//! Exact linear assignment (Hungarian algorithm, O(n³), shortest augmenting paths with
//! potentials). Used by weight matching (align) and by minibatch-OT couplings.

/// Minimise `Σ_r cost[r][σ(r)]` over permutations σ of a square `n × n` cost matrix given
/// row-major. Returns σ as `assignment[row] = column`.
pub fn solve_min(cost: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(cost.len(), n * n, "cost matrix must be n×n");
    if n == 0 {
        return Vec::new();
    }
    // 1-based arrays as in the classic formulation; column 0 is a virtual column.
    let inf = f64::INFINITY;
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; n + 1];
    let mut p = vec![0usize; n + 1]; // p[col] = row matched to col
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost[(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assignment = vec![0usize; n];
    for j in 1..=n {
        assignment[p[j] - 1] = j - 1;
    }
    assignment
}

/// Maximise `Σ_r score[r][σ(r)]` (similarity matrices in weight matching).
pub fn solve_max(score: &[f64], n: usize) -> Vec<usize> {
    let neg: Vec<f64> = score.iter().map(|s| -s).collect();
    solve_min(&neg, n)
}

/// Total cost of an assignment.
pub fn total(cost: &[f64], n: usize, assignment: &[usize]) -> f64 {
    assignment.iter().enumerate().map(|(r, &c)| cost[r * n + c]).sum()
}

/// Every permutation of `0..n`, for brute-force checks in tests.
#[cfg(test)]
pub(crate) fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for pos in 0..=p.len() {
            let mut q = p.clone();
            q.insert(pos, n - 1);
            out.push(q);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;


    #[test]
    fn equals_brute_force_on_random_matrices() {
        // A small xorshift keeps the test free of extra dependencies.
        let mut s = 0x9E3779B97F4A7C15u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in 1..=7 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n).map(|_| rnd() * 10.0 - 3.0).collect();
                let got = total(&cost, n, &solve_min(&cost, n));
                let best = permutations(n)
                    .iter()
                    .map(|p| total(&cost, n, p))
                    .fold(f64::INFINITY, f64::min);
                assert!((got - best).abs() < 1e-9, "n={n}: hungarian {got} vs brute force {best}");
            }
        }
    }

    #[test]
    fn returns_a_permutation() {
        let cost = vec![1.0; 25];
        let mut a = solve_min(&cost, 5);
        a.sort();
        assert_eq!(a, vec![0, 1, 2, 3, 4]);
    }
}
