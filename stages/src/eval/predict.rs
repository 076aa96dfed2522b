//! Batched forward passes of many networks over the rows of a split: the one place the
//! evaluation touches the MLP.

use super::EvalError;
use crate::data::Split;
use crate::layout::Layout;
use crate::mlp;

/// Rows per forward call: large enough that each layer is one efficient sgemm, small enough
/// that wide layouts on the 60,000-row training split keep their activations small.
pub const FORWARD_ROWS: usize = 1024;

/// Check that networks of `layout` can be evaluated on `split`.
pub fn check_split(layout: &Layout, split: &Split) -> Result<(), EvalError> {
    if split.is_empty() {
        return Err(EvalError::EmptySplit);
    }
    if split.features != layout.inputs() {
        return Err(EvalError::WrongFeatures { layout: layout.clone(), expected: layout.inputs(), found: split.features });
    }
    if let Some(&label) = split.y.iter().find(|&&y| y as usize >= layout.outputs()) {
        return Err(EvalError::LabelOutOfRange { layout: layout.clone(), label, classes: layout.outputs() });
    }
    Ok(())
}

/// Check every network has the layout's length.
pub fn check_networks(layout: &Layout, networks: &[&[f32]]) -> Result<(), EvalError> {
    if networks.is_empty() {
        return Err(EvalError::NoNetworks);
    }
    let expected = layout.num_params();
    match networks.iter().position(|t| t.len() != expected) {
        Some(network) => Err(EvalError::WrongLength { network, layout: layout.clone(), expected, found: networks[network].len() }),
        None => Ok(()),
    }
}

/// Logits `[rows × n_L]` of θ on the first `rows` rows of `x` (`[rows × n_0]` row-major).
pub fn logits(layout: &Layout, theta: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    let features = layout.inputs();
    let mut out = Vec::with_capacity(rows * layout.outputs());
    for start in (0..rows).step_by(FORWARD_ROWS) {
        let end = (start + FORWARD_ROWS).min(rows);
        out.extend(mlp::forward(layout, theta, &x[start * features..end * features], end - start));
    }
    out
}

/// Row-wise softmax of logits `[rows × classes]`, max-shifted.
pub fn softmax(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = logits.to_vec();
    for row in out.chunks_exact_mut(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
    out
}

/// The index of the first largest value (PyTorch's `argmax` on ties picks the first too).
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate().skip(1) {
        if v > row[best] {
            best = j;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    #[test]
    fn chunked_logits_match_one_forward() {
        let layout = Layout(vec![3, 4, 2]);
        let mut r = rng::stream(1, "test", 0);
        let mut theta = vec![0.0; layout.num_params()];
        rng::fill_normal(&mut r, &mut theta, 0.0, 0.5);
        let rows = FORWARD_ROWS + 7;
        let mut x = vec![0.0; rows * 3];
        rng::fill_normal(&mut r, &mut x, 0.0, 1.0);
        let whole = mlp::forward(&layout, &theta, &x, rows);
        let chunked = logits(&layout, &theta, &x, rows);
        assert_eq!(whole.len(), chunked.len());
        for (a, b) in whole.iter().zip(&chunked) {
            assert!((a - b).abs() < 1e-5);
        }
        let p = softmax(&chunked, 2);
        assert!(p.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-6));
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let layout = Layout(vec![3, 2]);
        let split = Split { features: 3, x: vec![0.0; 6], y: vec![0, 2] };
        assert!(matches!(check_split(&layout, &split), Err(EvalError::LabelOutOfRange { label: 2, .. })));
        let wide = Split { features: 4, x: vec![0.0; 4], y: vec![0] };
        assert!(matches!(check_split(&layout, &wide), Err(EvalError::WrongFeatures { .. })));
        assert_eq!(check_networks(&layout, &[]), Err(EvalError::NoNetworks));
        assert!(matches!(check_networks(&layout, &[&[0.0; 3]]), Err(EvalError::WrongLength { network: 0, .. })));
    }
}
