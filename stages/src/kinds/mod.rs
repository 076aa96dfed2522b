//! Stage kinds of the flow side of the thesis: `train-flow` and `sample`.

pub mod sample;
pub mod train_flow;

use crate::kind::{Params, StageError};

/// Parses an enum parameter with its `parse` function.
pub(crate) fn enum_param<T>(params: &Params, name: &str, parse: fn(&str) -> Option<T>, words: &[&str]) -> Result<T, StageError> {
    let value = params.str(name)?;
    parse(value).ok_or_else(|| StageError::Param(format!("`{name}` must be one of {words:?}, got \"{value}\"")))
}

/// A positive integer parameter.
pub(crate) fn positive(params: &Params, name: &str) -> Result<usize, StageError> {
    match params.usize(name)? {
        0 => Err(StageError::Param(format!("`{name}` must be at least 1"))),
        n => Ok(n),
    }
}

/// The name of the file holding a trained flow's model record.
pub const MODEL_FILE: &str = "flow.mpk";
/// The name of the file describing a trained flow ([`crate::flow::FlowSpec`] and more).
pub const FLOW_FILE: &str = "flow.json";
