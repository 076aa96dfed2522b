//! Mean and spread of a list of numbers, as the stages report them: one definition for
//! every stage. Stages use the population standard deviation (ddof = 0); the report's
//! tables and figures, which summarize across instances, use the sample one (ddof = 1,
//! `src/report/aggregate.rs`), and say so under each table.

/// Mean and population standard deviation (ddof = 0, numpy's default, which is what
/// "± std over samples" in the thesis's tables most plausibly used).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub count: usize,
}

impl MeanStd {
    /// What an empty list summarizes to where a row must still be written.
    pub const EMPTY: MeanStd = MeanStd { mean: 0.0, std: 0.0, count: 0 };

    /// `None` for an empty list.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<MeanStd> {
        let values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Some(MeanStd { mean, std: var.sqrt(), count: values.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_std() {
        let s = MeanStd::of([1.0, 3.0]).unwrap();
        assert_eq!((s.mean, s.std, s.count), (2.0, 1.0, 2));
        assert!(MeanStd::of([]).is_none());
    }
}
