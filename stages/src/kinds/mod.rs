//! The science stage kinds: typed parameters at the boundary, then calls into the
//! modules that do the work.

pub mod align;
pub mod barriers;
pub mod canonicalize;
pub mod collect;
pub mod evaluate;
pub mod finetune;
pub mod sample;
pub mod train_flow;
pub mod toy_data;

use std::path::Path;

use crate::data::{self, DataError, Dataset, DatasetName};
use crate::kind::{Params, StageContext, StageError, Value};
use crate::layout::Layout;
use crate::weights::{WeightSet, WeightsError, FILE_NAME};

impl From<WeightsError> for StageError {
    fn from(e: WeightsError) -> Self {
        match e {
            WeightsError::Io { path, source } => StageError::io(path.display().to_string(), source),
            other => StageError::Input(other.to_string()),
        }
    }
}

impl From<crate::eval::EvalError> for StageError {
    fn from(e: crate::eval::EvalError) -> Self {
        StageError::Input(e.to_string())
    }
}

impl From<DataError> for StageError {
    fn from(e: DataError) -> Self {
        StageError::Input(e.to_string())
    }
}

/// A list of integers as a `Value`.
#[cfg(test)]
pub(crate) fn int_list(values: &[i64]) -> Value {
    Value::List(values.iter().map(|&v| Value::Int(v)).collect())
}

/// A layout must read the dataset's inputs and produce its classes.
pub(crate) fn check_layout_fits(layout: &Layout, dataset: DatasetName) -> Result<(), StageError> {
    if layout.inputs() != dataset.inputs() || layout.outputs() != dataset.classes() {
        return Err(StageError::Param(format!(
            "layout {layout} does not fit {dataset}: it needs {} inputs and {} outputs",
            dataset.inputs(),
            dataset.classes()
        )));
    }
    Ok(())
}

pub(crate) fn load_dataset(ctx: &StageContext<'_>, name: DatasetName, split_seed: u64) -> Result<Dataset, StageError> {
    Ok(data::load(name, ctx.data_dir, split_seed)?)
}

/// The weight set of the single upstream instance named by a reference parameter.
pub(crate) fn read_input_weights(ctx: &StageContext<'_>, param: &str) -> Result<WeightSet, StageError> {
    let input = ctx.input(param)?;
    Ok(WeightSet::read(&input.file(FILE_NAME))?)
}

pub(crate) fn write_weights(set: &WeightSet, out_dir: &Path) -> Result<(), StageError> {
    Ok(set.write(&out_dir.join(FILE_NAME))?)
}

/// A rayon pool of the stage's thread budget.
pub(crate) fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, StageError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| StageError::Failed(format!("could not start {threads} worker threads: {e}")))
}

/// Result-table row from `(column, value)` pairs.
pub(crate) fn row<const N: usize>(cells: [(&str, Value); N]) -> crate::kind::Row {
    cells.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A hand-built `StageContext` for running kinds in tests.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use crate::kind::{InputArtifact, NoProgress, ParamSpec, Params, Row, StageContext, StageError, StageKind, Value};

    /// Fill in every default of a kind's schema, then apply `overrides`.
    pub fn params(kind: &dyn StageKind, overrides: &[(&str, Value)]) -> Params {
        let mut map: BTreeMap<String, Value> = kind
            .params()
            .into_iter()
            .filter_map(|ParamSpec { name, default, .. }| default.map(|d| (name.to_owned(), d)))
            .collect();
        for (k, v) in overrides {
            map.insert((*k).to_owned(), v.clone());
        }
        Params(map)
    }

    pub fn input(dir: &Path, kind: &str) -> InputArtifact {
        InputArtifact { instance: kind.to_owned(), kind: kind.to_owned(), axes: BTreeMap::new(), key: "test".into(), dir: dir.to_owned() }
    }

    /// Run a kind with the given inputs into `out`; returns its tables.
    pub fn run(
        kind: &dyn StageKind,
        params: &Params,
        inputs: BTreeMap<String, Vec<InputArtifact>>,
        out: &Path,
        seed: u64,
    ) -> Result<BTreeMap<String, Vec<Row>>, StageError> {
        kind.validate(params)?;
        std::fs::create_dir_all(out).expect("test output folder");
        let scratch = out.join("scratch");
        let axes = BTreeMap::new();
        let data_dir = data_dir();
        let mut ctx = StageContext {
            params,
            inputs: &inputs,
            axes: &axes,
            out_dir: out,
            scratch_dir: &scratch,
            project_dir: out,
            data_dir: &data_dir,
            seed,
            threads: 2,
            backend: Default::default(),
            progress: &NoProgress,
            tables: BTreeMap::new(),
        };
        kind.run(&mut ctx)?;
        assert_produces_what_it_declares(kind, params, &inputs, out, &ctx.tables);
        Ok(ctx.tables)
    }

    /// Every kind test doubles as a check of the kind's declared connections: what it
    /// wrote is what `produces` promises the stages downstream, and no row carries a
    /// column the declaration leaves out (validate would refuse a table that reads it).
    pub(crate) fn assert_produces_what_it_declares(
        kind: &dyn StageKind,
        params: &Params,
        inputs: &BTreeMap<String, Vec<InputArtifact>>,
        out: &Path,
        tables: &BTreeMap<String, Vec<Row>>,
    ) {
        let declared = kind.produces(params).expect("science kinds declare what they produce");
        let mut emitted: Vec<&str> = tables.keys().map(String::as_str).collect();
        let mut promised: Vec<&str> = declared.tables.iter().map(|t| t.name).collect();
        emitted.sort();
        promised.sort();
        assert_eq!(emitted, promised, "`{}` emitted other tables than it declares", kind.name());
        for decl in &declared.tables {
            let mut allowed: Vec<String> = decl.columns.clone().expect("science tables declare their columns");
            if let Some(param) = decl.network_columns_of {
                for input in inputs.get(param).into_iter().flatten() {
                    let set = crate::weights::WeightSet::read(&input.file(super::FILE_NAME)).expect("input weight set");
                    allowed.extend(set.columns.keys().cloned());
                }
            }
            for row in &tables[decl.name] {
                if let Some(extra) = row.keys().find(|c| !allowed.contains(c)) {
                    panic!("`{}` wrote the column `{extra}` in `{}`, which it does not declare", kind.name(), decl.name);
                }
            }
        }
        let written = out.join(super::FILE_NAME);
        assert_eq!(written.is_file(), declared.weights, "`{}`: weight set written vs declared", kind.name());
        if declared.weights {
            let set = crate::weights::WeightSet::read(&written).expect("written weight set");
            let mut own: Vec<&str> = set.columns.keys().map(String::as_str).collect();
            let mut promised: Vec<String> = match declared.network_columns {
                crate::kind::NetworkColumns::None => Vec::new(),
                crate::kind::NetworkColumns::Own(c) => c.iter().map(|c| c.to_string()).collect(),
                crate::kind::NetworkColumns::KeptFrom(param) => inputs[param]
                    .iter()
                    .flat_map(|i| crate::weights::WeightSet::read(&i.file(super::FILE_NAME)).expect("input weight set").columns.into_keys())
                    .collect(),
            };
            own.sort();
            promised.sort();
            promised.dedup();
            assert_eq!(own, promised, "`{}`: per-network columns written vs declared", kind.name());
        }
        assert_eq!(out.join(super::FLOW_FILE).is_file(), declared.flow, "`{}`: flow written vs declared", kind.name());
    }

    /// `$WFPIPE_DATA`, else `data/` (MNIST is not needed by these tests).
    pub fn data_dir() -> PathBuf {
        std::env::var_os("WFPIPE_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"))
    }

    /// A fresh temporary folder for one test.
    pub fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wfpipe-stages-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary folder");
        dir
    }
}


crate::kind_params! {
    /// The optimizer of the base MLPs, shared by `collect` and `finetune`.
    pub(crate) struct OptimizerArgs {
        optimizer: crate::mlp::OptimizerKind = default(crate::mlp::OptimizerKind::Adam), "adam or sgd (PyTorch semantics)";
        lr: f64 [crate::kind::ParamType::POSITIVE_FLOAT] = default(1e-3), "learning rate";
        momentum: f64 [crate::kind::ParamType::Float { min: Some(0.0), max: Some(1.0) }] = default(0.9), "SGD momentum (SGD only)";
        weight_decay: f64 [crate::kind::ParamType::NON_NEGATIVE_FLOAT] = default(0.0), "L2 penalty added to the gradient";
    }
}

impl OptimizerArgs {
    pub(crate) fn config(&self) -> Result<crate::mlp::OptimizerConfig, StageError> {
        use crate::mlp::{OptimizerConfig, OptimizerKind};
        let mut optimizer = match self.optimizer {
            OptimizerKind::Adam => OptimizerConfig::adam(self.lr),
            OptimizerKind::Sgd => {
                if self.momentum >= 1.0 {
                    return Err(StageError::Param(format!("`momentum` must be below 1, got {}", self.momentum)));
                }
                OptimizerConfig::sgd(self.lr, self.momentum, self.weight_decay)
            }
        };
        optimizer.weight_decay = self.weight_decay;
        Ok(optimizer)
    }
}

/// A `layout` parameter's sizes as a layout.
pub(crate) fn layout_of(sizes: &[usize]) -> Result<Layout, StageError> {
    Layout::new(sizes.to_vec()).map_err(|e| StageError::Param(format!("`layout`: {e}")))
}

pub const MODEL_FILE: &str = "flow.mpk";
/// The name of the file describing a trained flow ([`crate::flow::FlowSpec`] and more).
pub const FLOW_FILE: &str = "flow.json";

/// Running kinds in tests without an orchestrator.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use crate::kind::{BackendChoice, InputArtifact, NoProgress, Params, Row, StageContext, StageError, StageKind};

    pub use super::testing::params;

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
        if result.is_ok() {
            super::testing::assert_produces_what_it_declares(kind, params, &inputs, &out, &tables);
        }
        (result, out, tables)
    }
}

/// The thesis's base layout for a dataset (docs/science.md §1.1).
pub(crate) fn usual_layout(dataset: DatasetName) -> Layout {
    match dataset {
        DatasetName::UciWdbc => Layout(vec![30, 16, 16, 2]),
        DatasetName::Mnist | DatasetName::FashionMnist => Layout(vec![784, 10, 10]),
    }
}

/// The layout a FLOP estimate should assume, from the parameters a kind sees at plan
/// time (its own, then its upstream instances'): a non-empty `layout`, else the usual
/// layout of `dataset`, else the toy/UCI layout.
pub(crate) fn estimate_layout(params: &Params) -> Layout {
    if let Ok(sizes) = params.usize_list("layout") {
        if let Ok(layout) = Layout::new(sizes) {
            return layout;
        }
    }
    match params.str("dataset").ok().and_then(|d| d.parse::<DatasetName>().ok()) {
        Some(dataset) => usual_layout(dataset),
        None => Layout(vec![30, 16, 16, 2]),
    }
}
