//! Flat networks between host buffers and tensors: a row-major `[count, P]` buffer (the
//! flat layout of docs/science.md 0) as a `[count, P]` tensor and back, and a batch's
//! times as a `[count]` tensor.

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// `rows` (row-major, `width` values a row) as a `[rows.len() / width, width]` tensor.
pub fn rows_tensor<B: Backend>(rows: &[f32], width: usize, device: &B::Device) -> Tensor<B, 2> {
    assert!(width > 0 && rows.len() % width == 0, "{} values are not rows of {width}", rows.len());
    Tensor::from_data(TensorData::new(rows.to_vec(), [rows.len() / width, width]), device)
}

/// One value a row (a batch's times) as a `[values.len()]` tensor.
pub fn column_tensor<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// The mean of row-major `rows` of `width` values (each row adds `row / count`, in order).
pub fn mean_row(rows: &[f32], width: usize) -> Vec<f32> {
    let count = rows.len() / width;
    let mut mean = vec![0f32; width];
    for row in rows.chunks(width) {
        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / count as f32);
    }
    mean
}

/// A `[count, P]` tensor's rows back in one row-major f32 buffer.
pub fn host_rows<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("converted to f32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_in_their_order() {
        type B = burn::backend::NdArray<f32>;
        let rows: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let t = rows_tensor::<B>(&rows, 4, &Default::default());
        assert_eq!(t.dims(), [3, 4]);
        assert_eq!(t.clone().slice([1..2, 0..4]).into_data().to_vec::<f32>().unwrap(), vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(host_rows(t), rows);
        assert_eq!(column_tensor::<B>(&[0.5, 0.25], &Default::default()).dims(), [2]);
    }
}
