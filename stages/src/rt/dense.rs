//! Linear layers applied to feature tensors of any rank as one matrix product.
//!
//! burn's `Linear` on a `[B, N, N, D]` tensor runs a batched matmul over `B·N` small
//! matrices and, in the backward pass, a batched weight gradient summed afterwards. Folding
//! the leading axes into one row axis first turns both into a single large GEMM, which is
//! what the dense N² edge tensors need.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

/// `x·W + b` over the last axis of `x`, computed on `[rows, d_in]`.
pub fn dense<B: Backend, const D: usize>(linear: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let y = linear.forward(x.reshape([rows, d_in]));
    let mut out_dims = dims;
    out_dims[D - 1] = y.dims()[1];
    y.reshape(out_dims)
}

/// `x·W` with only the rows `inputs` of the weight matrix, and no bias.
pub fn dense_rows<B: Backend, const D: usize>(linear: &Linear<B>, x: Tensor<B, D>, inputs: std::ops::Range<usize>) -> Tensor<B, D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let [_, d_out] = linear.weight.dims();
    let weight = linear.weight.val().slice([inputs, 0..d_out]);
    let y = x.reshape([rows, d_in]).matmul(weight);
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    y.reshape(out_dims)
}
