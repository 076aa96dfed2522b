//! Which ordered node pairs of a weight graph carry an edge state and take part in
//! attention, with the index tables both engines run on.
//!
//! The thesis's model keeps every pair (docs/science.md §6.2: N² of them, almost all between two
//! input neurons, which share no weight). [`Attention::LayerBlocks`] keeps the pairs
//! between consecutive layers in both directions plus each node's self pair: for MNIST's
//! 784-10-10, 16,684 pairs instead of 646,416. Every kept pair's reverse is kept, so the
//! edge message's `[E_ij ; E_ji]` is defined, and every weight's pair is kept, so the
//! readout is the same. Restricted to the kept pairs the layer is the dense layer with the
//! attention logits of the other pairs at −∞: the other pairs' states never reach a kept
//! pair or a node.

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Which node pairs the relational transformer keeps (`train-flow`'s `attention`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attention {
    /// Every ordered pair: the thesis's model.
    #[default]
    Dense,
    /// Pairs between consecutive layers (both directions) and each node's self pair.
    LayerBlocks,
}

crate::words!(Attention, "attention", { Dense = "dense", LayerBlocks = "layer-blocks" });

impl Attention {
    pub fn is_dense(&self) -> bool {
        *self == Attention::Dense
    }

    /// The number of pairs kept for `layout`.
    pub fn pair_count(&self, layout: &Layout) -> usize {
        let n = layout.sizes();
        match self {
            Attention::Dense => layout.num_nodes() * layout.num_nodes(),
            Attention::LayerBlocks => layout.num_nodes() + 2 * n.windows(2).map(|w| w[0] * w[1]).sum::<usize>(),
        }
    }
}

/// Nodes that attend over the same number of pairs, consecutive in node order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairGroup {
    /// First node and number of nodes.
    pub first: usize,
    pub nodes: usize,
    /// Pairs per node; the group's pairs are `nodes × per_node`, row-major.
    pub per_node: usize,
}

/// The kept pairs, sorted by source node, then target node. Pair `(i, j)` carries the
/// state `E_ij`; node `i` attends over the pairs `(i, ·)`.
#[derive(Clone, Debug)]
pub struct Pairs {
    pub source: Vec<u32>,
    pub target: Vec<u32>,
    /// Index of pair `(j, i)` for pair `(i, j)`.
    pub reverse: Vec<u32>,
    /// Pairs of node `i`: `row_start[i]..row_start[i + 1]`.
    pub row_start: Vec<u32>,
    /// The pair of each weight, in flat weight order.
    pub structural: Vec<u32>,
    /// Per pair: the weight it carries, or `structural.len()` for a pair that carries none.
    pub weight: Vec<u32>,
    /// Nodes with equal pair counts (dense: one group; layer blocks: one per layer).
    pub groups: Vec<PairGroup>,
}

impl Pairs {
    pub fn new(layout: &Layout, attention: Attention) -> Self {
        let n = layout.sizes();
        let nodes = layout.num_nodes();
        let depth = layout.num_layers();
        let layer_range = |l: usize| layout.node(l, 0)..layout.node(l, 0) + n[l];
        // Targets of node i of layer l, ascending.
        let targets = |l: usize, i: usize| -> Vec<usize> {
            match attention {
                Attention::Dense => (0..nodes).collect(),
                Attention::LayerBlocks => {
                    let below = if l > 0 { layer_range(l - 1) } else { 0..0 };
                    let above = if l < depth { layer_range(l + 1) } else { 0..0 };
                    below.chain(std::iter::once(i)).chain(above).collect()
                }
            }
        };
        let mut source = Vec::new();
        let mut target = Vec::new();
        let mut row_start = Vec::with_capacity(nodes + 1);
        let mut groups: Vec<PairGroup> = Vec::new();
        for l in 0..=depth {
            for i in layer_range(l) {
                row_start.push(source.len() as u32);
                let row = targets(l, i);
                match groups.last_mut() {
                    Some(g) if g.per_node == row.len() && g.first + g.nodes == i => g.nodes += 1,
                    _ => groups.push(PairGroup { first: i, nodes: 1, per_node: row.len() }),
                }
                for j in row {
                    source.push(i as u32);
                    target.push(j as u32);
                }
            }
        }
        row_start.push(source.len() as u32);
        let index = |i: usize, j: usize| -> u32 {
            let row = &target[row_start[i] as usize..row_start[i + 1] as usize];
            let at = row.binary_search(&(j as u32)).expect("the reverse of a kept pair is kept");
            row_start[i] + at as u32
        };
        let reverse = source.iter().zip(&target).map(|(&i, &j)| index(j as usize, i as usize)).collect();
        let mut structural = Vec::with_capacity(layout.num_weights());
        for l in 1..=depth {
            for i in layer_range(l - 1) {
                for j in layer_range(l) {
                    structural.push(index(i, j));
                }
            }
        }
        let mut weight = vec![structural.len() as u32; source.len()];
        for (k, &pair) in structural.iter().enumerate() {
            weight[pair as usize] = k as u32;
        }
        Pairs { source, target, reverse, row_start, structural, weight, groups }
    }

    pub fn len(&self) -> usize {
        self.source.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// Whether pair `p` carries a weight.
    pub fn is_structural(&self, p: usize) -> bool {
        (self.weight[p] as usize) < self.structural.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_counts_match_the_layouts() {
        for (sizes, dense, blocks) in [
            (vec![784, 10, 10], 646_416, 16_684),
            (vec![784, 32, 10], 682_276, 51_642),
            (vec![30, 16, 16, 2], 4_096, 1_600),
        ] {
            let layout = Layout(sizes);
            for (attention, want) in [(Attention::Dense, dense), (Attention::LayerBlocks, blocks)] {
                assert_eq!(attention.pair_count(&layout), want, "{layout} {attention:?}");
                if want < 100_000 || attention == Attention::LayerBlocks {
                    assert_eq!(Pairs::new(&layout, attention).len(), want, "{layout} {attention:?}");
                }
            }
        }
    }

    #[test]
    fn dense_pairs_are_row_major_and_layer_blocks_keep_exactly_the_neighbours() {
        let layout = Layout(vec![3, 4, 2]);
        let n = layout.num_nodes();
        let dense = Pairs::new(&layout, Attention::Dense);
        for p in 0..n * n {
            assert_eq!((dense.source[p] as usize, dense.target[p] as usize), (p / n, p % n));
            assert_eq!(dense.reverse[p] as usize, (p % n) * n + p / n);
        }
        assert_eq!(dense.groups, vec![PairGroup { first: 0, nodes: n, per_node: n }]);
        let layer = |i: usize| if i < 3 { 0i64 } else if i < 7 { 1 } else { 2 };
        let blocks = Pairs::new(&layout, Attention::LayerBlocks);
        let kept: Vec<(usize, usize)> =
            (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).filter(|&(i, j)| i == j || (layer(i) - layer(j)).abs() == 1).collect();
        let got: Vec<(usize, usize)> = blocks.source.iter().zip(&blocks.target).map(|(&i, &j)| (i as usize, j as usize)).collect();
        assert_eq!(got, kept);
        for p in 0..blocks.len() {
            let r = blocks.reverse[p] as usize;
            assert_eq!((blocks.source[r], blocks.target[r]), (blocks.target[p], blocks.source[p]));
        }
        assert_eq!(
            blocks.groups,
            vec![
                PairGroup { first: 0, nodes: 3, per_node: 5 },
                PairGroup { first: 3, nodes: 4, per_node: 6 },
                PairGroup { first: 7, nodes: 2, per_node: 5 },
            ]
        );
        // Both readouts visit the weights in flat order: pair (node(l−1, a), node(l, b)).
        for pairs in [&dense, &blocks] {
            for l in 1..=2 {
                for b in 0..layout.sizes()[l] {
                    for a in 0..layout.sizes()[l - 1] {
                        let p = pairs.structural[layout.weight_index(l, b, a)] as usize;
                        assert_eq!((pairs.source[p] as usize, pairs.target[p] as usize), (layout.node(l - 1, a), layout.node(l, b)));
                    }
                }
            }
        }
    }
}
