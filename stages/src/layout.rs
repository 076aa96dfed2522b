//! The flat weight layout of an MLP (docs/science.md section 0): the one representation of a
//! network across the project.
//!
//! `θ = [vec(W_1ᵀ), …, vec(W_Lᵀ), b_1, …, b_L]` where `W_l ∈ R^{n_l × n_{l-1}}` (torch
//! orientation) and `vec(W_lᵀ)` is row-major over `[n_{l-1}, n_l]`: the weight from input
//! neuron `a` of layer `l-1` to output neuron `b` of layer `l` sits at `O_l + a·n_l + b`.

use serde::{Deserialize, Serialize};

/// Neuron counts per layer, `[n_0, …, n_L]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Layout(pub Vec<usize>);

impl Layout {
    pub fn new(sizes: Vec<usize>) -> Result<Self, String> {
        if sizes.len() < 2 {
            return Err(format!("a layout needs at least an input and an output size, got {sizes:?}"));
        }
        if sizes.iter().any(|&n| n == 0) {
            return Err(format!("layout sizes must be positive, got {sizes:?}"));
        }
        Ok(Layout(sizes))
    }

    pub fn sizes(&self) -> &[usize] {
        &self.0
    }

    /// Number of weight layers `L`.
    pub fn num_layers(&self) -> usize {
        self.0.len() - 1
    }

    pub fn inputs(&self) -> usize {
        self.0[0]
    }

    pub fn outputs(&self) -> usize {
        *self.0.last().expect("layout has at least two sizes")
    }

    /// `P_W = Σ_l n_{l-1} n_l`.
    pub fn num_weights(&self) -> usize {
        self.0.windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// `Σ_l n_l` for l = 1..L.
    pub fn num_biases(&self) -> usize {
        self.0[1..].iter().sum()
    }

    /// `P = P_W + Σ_l n_l`.
    pub fn num_params(&self) -> usize {
        self.num_weights() + self.num_biases()
    }

    /// Number of graph nodes `N = Σ_l n_l` over all layers including the input.
    pub fn num_nodes(&self) -> usize {
        self.0.iter().sum()
    }

    /// Offset `O_l` of `vec(W_lᵀ)` for weight layer `l` in 1..=L.
    pub fn weight_offset(&self, l: usize) -> usize {
        assert!((1..=self.num_layers()).contains(&l), "weight layer {l} out of range");
        self.0[..l].windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// Offset of `b_l` for weight layer `l` in 1..=L.
    pub fn bias_offset(&self, l: usize) -> usize {
        assert!((1..=self.num_layers()).contains(&l), "bias layer {l} out of range");
        self.num_weights() + self.0[1..l].iter().sum::<usize>()
    }

    /// Flat index of `W_l[b, a]` (output neuron `b`, input neuron `a`).
    pub fn weight_index(&self, l: usize, out: usize, inp: usize) -> usize {
        self.weight_offset(l) + inp * self.0[l] + out
    }

    /// Flat index of `b_l[b]`.
    pub fn bias_index(&self, l: usize, out: usize) -> usize {
        self.bias_offset(l) + out
    }

    /// Graph node index of neuron `b` in layer `l` (0 = input layer).
    pub fn node(&self, l: usize, b: usize) -> usize {
        self.0[..l].iter().sum::<usize>() + b
    }

    /// `W_l` in torch orientation, row-major `[n_l, n_{l-1}]`, read out of a flat vector.
    pub fn weight_matrix(&self, theta: &[f32], l: usize) -> Vec<f32> {
        let (n_in, n_out) = (self.0[l - 1], self.0[l]);
        let off = self.weight_offset(l);
        let mut w = vec![0.0; n_out * n_in];
        for a in 0..n_in {
            for b in 0..n_out {
                w[b * n_in + a] = theta[off + a * n_out + b];
            }
        }
        w
    }

    /// Write `W_l` (torch orientation, row-major `[n_l, n_{l-1}]`) into a flat vector.
    pub fn set_weight_matrix(&self, theta: &mut [f32], l: usize, w: &[f32]) {
        let (n_in, n_out) = (self.0[l - 1], self.0[l]);
        let off = self.weight_offset(l);
        for a in 0..n_in {
            for b in 0..n_out {
                theta[off + a * n_out + b] = w[b * n_in + a];
            }
        }
    }

    pub fn bias<'a>(&self, theta: &'a [f32], l: usize) -> &'a [f32] {
        let off = self.bias_offset(l);
        &theta[off..off + self.0[l]]
    }

    pub fn bias_mut<'a>(&self, theta: &'a mut [f32], l: usize) -> &'a mut [f32] {
        let off = self.bias_offset(l);
        &mut theta[off..off + self.0[l]]
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        write!(f, "{}", s.join("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_spec() {
        assert_eq!(Layout(vec![784, 10, 10]).num_params(), 7960);
        assert_eq!(Layout(vec![30, 16, 16, 2]).num_params(), 802);
        assert_eq!(Layout(vec![784, 32, 10]).num_params(), 25450);
        assert_eq!(Layout(vec![784, 10, 10]).num_nodes(), 804);
        assert_eq!(Layout(vec![30, 16, 16, 2]).num_nodes(), 64);
        assert_eq!(Layout(vec![784, 32, 10]).num_nodes(), 826);
    }

    #[test]
    fn flat_offsets_follow_transposed_row_major_order() {
        let l = Layout(vec![3, 2, 4]);
        // W_1ᵀ is [3,2]: weight from input a to output b at a*2+b.
        assert_eq!(l.weight_index(1, 1, 2), 5);
        assert_eq!(l.weight_offset(2), 6);
        assert_eq!(l.weight_index(2, 3, 1), 6 + 4 + 3);
        assert_eq!(l.bias_offset(1), 14);
        assert_eq!(l.bias_index(2, 0), 16);
        let theta: Vec<f32> = (0..l.num_params()).map(|i| i as f32).collect();
        let w1 = l.weight_matrix(&theta, 1);
        let mut back = vec![0.0; theta.len()];
        l.set_weight_matrix(&mut back, 1, &w1);
        assert_eq!(&back[..6], &theta[..6]);
    }
}
