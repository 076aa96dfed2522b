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

/// Running kinds in tests without an orchestrator.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use crate::kind::{BackendChoice, InputArtifact, NoProgress, Params, Row, StageContext, StageError, StageKind, Value};

    /// The kind's defaults with `overrides` applied.
    pub fn params(kind: &dyn StageKind, overrides: &[(&str, Value)]) -> Params {
        let mut map: BTreeMap<String, Value> =
            kind.params().into_iter().filter_map(|s| s.default.map(|d| (s.name.to_owned(), d))).collect();
        for (k, v) in overrides {
            map.insert((*k).to_owned(), v.clone());
        }
        Params(map)
    }

    /// Runs `kind` with one input artifact of `input_kind` in `input_dir`; returns the
    /// result, the output folder and the emitted tables.
    pub fn run(
        kind: &dyn StageKind,
        params: &Params,
        input: &str,
        input_kind: &str,
        input_dir: &Path,
        dir: &Path,
    ) -> (Result<(), StageError>, PathBuf, BTreeMap<String, Vec<Row>>) {
        let out = dir.join("out");
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&out).expect("output folder");
        std::fs::create_dir_all(&scratch).expect("scratch folder");
        std::fs::create_dir_all(input_dir).expect("input folder");
        let artifact = InputArtifact {
            instance: input_kind.to_owned(),
            kind: input_kind.to_owned(),
            axes: BTreeMap::new(),
            key: "test".to_owned(),
            dir: input_dir.to_path_buf(),
        };
        let inputs = BTreeMap::from([(input.to_owned(), vec![artifact])]);
        let axes = BTreeMap::new();
        let mut ctx = StageContext {
            params,
            inputs: &inputs,
            axes: &axes,
            out_dir: &out,
            scratch_dir: &scratch,
            project_dir: dir,
            data_dir: dir,
            seed: 3,
            threads: 1,
            backend: BackendChoice::Cpu,
            progress: &NoProgress,
            tables: BTreeMap::new(),
        };
        let result = kind.run(&mut ctx);
        let tables = std::mem::take(&mut ctx.tables);
        (result, out, tables)
    }
}
