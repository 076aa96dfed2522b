//! The seam between the orchestrator and the science.
//!
//! A [`StageKind`] declares a typed parameter schema (with defaults), says which of its
//! parameters reference other stages, and runs: typed parameters + input artifacts ->
//! files in an output folder. It knows nothing of DAGs, caches, schedulers or executors;
//! the orchestrator knows nothing of what a kind computes. Everything a kind needs at run
//! time arrives in a [`StageContext`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A parameter value: the subset of TOML that schemas use. Integers and floats stay
/// distinct so that the canonical encoding of a key is stable (`1` for an integer
/// parameter, `1.0` for a float one, whatever the user typed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Table(BTreeMap<String, Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "array",
            Value::Table(_) => "table",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// TOML-like rendering, used in instance names and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    write!(f, "{x:.1}")
                } else {
                    write!(f, "{x}")
                }
            }
            Value::Str(s) => write!(f, "{s}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Table(t) => {
                write!(f, "{{")?;
                for (i, (k, v)) in t.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// How a parameter that names another stage consumes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefMode {
    /// One instance of this stage per upstream instance (joined on shared axis names).
    FanOut,
    /// One instance of this stage sees every selected upstream instance.
    Gather,
}

/// The type of a parameter. Values from the pipeline file are checked and coerced
/// against it (an integer is accepted where a float is expected and stored as a float).
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    Bool,
    Int {
        min: Option<i64>,
        max: Option<i64>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Str,
    /// One of a fixed set of kebab-case words.
    Enum(&'static [&'static str]),
    IntList,
    FloatList,
    StrList,
    /// A table of strings to strings (environment variables, file maps, ...).
    StrMap,
    /// A path to a file read by the stage; the orchestrator hashes its contents into the
    /// key, so editing the file re-runs the stage.
    File,
    /// A list of such files.
    FileList,
    /// A reference to another stage (`"stage"` or `"stage[axis=value,...]"`): a DAG edge.
    Ref {
        mode: RefMode,
    },
    /// A list of references (all gathered).
    RefList,
}

impl ParamType {
    pub const INT: ParamType = ParamType::Int { min: None, max: None };
    pub const POSITIVE_INT: ParamType = ParamType::Int { min: Some(1), max: None };
    pub const NON_NEGATIVE_INT: ParamType = ParamType::Int { min: Some(0), max: None };
    pub const FLOAT: ParamType = ParamType::Float { min: None, max: None };
    pub const NON_NEGATIVE_FLOAT: ParamType = ParamType::Float { min: Some(0.0), max: None };
    pub const POSITIVE_FLOAT: ParamType = ParamType::Float { min: Some(f64::MIN_POSITIVE), max: None };

    pub fn is_ref(&self) -> bool {
        matches!(self, ParamType::Ref { .. } | ParamType::RefList)
    }

    pub fn describe(&self) -> String {
        match self {
            ParamType::Bool => "a boolean".into(),
            ParamType::Int { min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("an integer in {a}..={b}"),
                (Some(a), None) => format!("an integer >= {a}"),
                (None, Some(b)) => format!("an integer <= {b}"),
                (None, None) => "an integer".into(),
            },
            ParamType::Float { min: Some(m), max: None } if *m == f64::MIN_POSITIVE => "a number > 0".into(),
            ParamType::Float { min: Some(m), max: Some(b) } if *m == f64::MIN_POSITIVE => format!("a number in (0, {b}]"),
            ParamType::Float { min, max } => match (min, max) {
                (Some(a), Some(b)) => format!("a number in [{a}, {b}]"),
                (Some(a), None) => format!("a number >= {a}"),
                (None, Some(b)) => format!("a number <= {b}"),
                (None, None) => "a number".into(),
            },
            ParamType::Str => "a string".into(),
            ParamType::Enum(words) => format!("one of {}", quote_list(words)),
            ParamType::IntList => "an array of integers".into(),
            ParamType::FloatList => "an array of numbers".into(),
            ParamType::StrList => "an array of strings".into(),
            ParamType::StrMap => "a table of strings".into(),
            ParamType::File => "a file path".into(),
            ParamType::FileList => "an array of file paths".into(),
            ParamType::Ref { .. } => "a stage reference such as \"stage\" or \"stage[axis=value]\"".into(),
            ParamType::RefList => "an array of stage references".into(),
        }
    }
}

fn quote_list(words: &[&str]) -> String {
    words.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", ")
}

/// One entry of a kind's parameter schema.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    /// `None`: the parameter is required.
    pub default: Option<Value>,
    pub doc: &'static str,
    /// False for a parameter added to a kind after results were cached: it enters the
    /// cache key only when set away from its default, so those results stay valid.
    pub keyed_at_default: bool,
}

impl ParamSpec {
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: None, doc, keyed_at_default: true }
    }

    pub fn with_default(name: &'static str, ty: ParamType, default: Value, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: Some(default), doc, keyed_at_default: true }
    }

    /// A parameter added after the kind's results were first cached, with a default that
    /// keeps the earlier behaviour: hashed only when set to something else.
    pub fn added(name: &'static str, ty: ParamType, default: Value, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: Some(default), doc, keyed_at_default: false }
    }

    /// An optional parameter whose absence is meaningful (an empty list/map/string).
    pub fn optional_ref(name: &'static str, mode: RefMode, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty: ParamType::Ref { mode },
            default: Some(Value::Str(String::new())),
            doc,
            keyed_at_default: true,
        }
    }
}

/// The parameters of `params` that stay out of the cache key: those added after the kind's
/// first results (see [`ParamSpec::added`]) and left at their default.
pub fn unkeyed_defaults(specs: &[ParamSpec], params: &Params) -> Vec<&'static str> {
    specs
        .iter()
        .filter(|s| !s.keyed_at_default && s.default.is_some() && params.0.get(s.name) == s.default.as_ref())
        .map(|s| s.name)
        .collect()
}

/// What one instance asks of the machine. Pipelines may override it per stage; it never
/// enters a key.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: u32,
    pub gpus: u32,
    pub mem_mb: u64,
    /// Wall-time limit in minutes (SLURM `--time`); 0 = none.
    pub time_min: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { cpus: 1, gpus: 0, mem_mb: 1024, time_min: 0 }
    }
}

/// Resolved parameters of one instance, all defaults applied and types checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Result<&Value, StageError> {
        self.0.get(name).ok_or_else(|| StageError::Param(format!("parameter `{name}` is missing")))
    }
    pub fn str(&self, name: &str) -> Result<&str, StageError> {
        self.get(name)?.as_str().ok_or_else(|| StageError::Param(format!("parameter `{name}` is not a string")))
    }
    pub fn f64(&self, name: &str) -> Result<f64, StageError> {
        self.get(name)?.as_f64().ok_or_else(|| StageError::Param(format!("parameter `{name}` is not a number")))
    }
    pub fn i64(&self, name: &str) -> Result<i64, StageError> {
        self.get(name)?.as_i64().ok_or_else(|| StageError::Param(format!("parameter `{name}` is not an integer")))
    }
    pub fn usize(&self, name: &str) -> Result<usize, StageError> {
        let v = self.i64(name)?;
        usize::try_from(v).map_err(|_| StageError::Param(format!("parameter `{name}` must be >= 0, got {v}")))
    }
    pub fn bool(&self, name: &str) -> Result<bool, StageError> {
        match self.get(name)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(StageError::Param(format!("parameter `{name}` is not a boolean"))),
        }
    }
    pub fn list(&self, name: &str) -> Result<&[Value], StageError> {
        match self.get(name)? {
            Value::List(v) => Ok(v),
            _ => Err(StageError::Param(format!("parameter `{name}` is not an array"))),
        }
    }
    /// Parse an enum parameter into a typed value (`T: FromStr` over the kebab-case words).
    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<T, StageError>
    where
        T::Err: fmt::Display,
    {
        let s = self.str(name)?;
        s.parse::<T>().map_err(|e| StageError::Param(format!("parameter `{name}`: {e}")))
    }
}

/// One upstream instance as seen by a consuming stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputArtifact {
    /// Instance name, e.g. `wdbc-flow[coupling=ot,geometry=euclidean]`.
    pub instance: String,
    /// The kind that produced it.
    pub kind: String,
    /// Its matrix axes (own and inherited), e.g. `{geometry: "euclidean"}`.
    pub axes: BTreeMap<String, Value>,
    /// Its cache key.
    pub key: String,
    /// The folder holding its output files.
    pub dir: PathBuf,
}

impl InputArtifact {
    /// The path of the file `name` the instance wrote, read through the reference `param`;
    /// [`StageError::InputWroteNo`] when it wrote none (`reads` says what the stage reads).
    pub fn require_file(&self, param: &str, name: &'static str, reads: Option<&'static str>) -> Result<PathBuf, StageError> {
        let path = self.file(name);
        if path.exists() {
            return Ok(path);
        }
        Err(StageError::InputWroteNo { param: param.to_owned(), instance: self.instance.clone(), kind: self.kind.clone(), file: name, reads })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Which compute device a stage should use. Chosen by the orchestrator, never in a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    #[default]
    Cpu,
    Cuda,
}

/// Where a running stage reports progress and scalar metrics.
pub trait ProgressSink: Send + Sync {
    /// `step` of `total` units of work done (iterations, runs, samples...).
    fn progress(&self, step: u64, total: u64, unit: &str);
    /// A scalar for the live display and the manifest (last value wins).
    fn metric(&self, name: &str, value: f64);
}

/// A sink that drops everything (unit tests, library use).
pub struct NoProgress;
impl ProgressSink for NoProgress {
    fn progress(&self, _: u64, _: u64, _: &str) {}
    fn metric(&self, _: &str, _: f64) {}
}

/// A row of a result table: column name -> value. Every row a stage emits lands in a
/// Polars table (parquet + csv) written by the orchestrator.
pub type Row = BTreeMap<String, Value>;

/// The column that tells a table's per-network rows from a row summarising them, whose
/// metrics are means with their spread in `<metric>_std`.
pub const ROW_TYPE: &str = "row_type";
pub const NETWORK_ROW: &str = "network";
pub const SUMMARY_ROW: &str = "summary";

/// Everything a stage instance gets to run.
pub struct StageContext<'a> {
    pub params: &'a Params,
    /// For each reference parameter, the upstream instances it selected (one for a
    /// fan-out reference, all selected ones for a gather reference), in instance-name order.
    pub inputs: &'a BTreeMap<String, Vec<InputArtifact>>,
    /// The instance's own matrix axes (own and inherited).
    pub axes: &'a BTreeMap<String, Value>,
    /// Write every output file here (flat or nested).
    pub out_dir: &'a Path,
    /// Survives a killed run of the same key: checkpoints go here so a re-run resumes.
    pub scratch_dir: &'a Path,
    /// The folder pipeline files are relative to (for `File` parameters).
    pub project_dir: &'a Path,
    /// Where MNIST / Fashion-MNIST IDX files are found.
    pub data_dir: &'a Path,
    pub seed: u64,
    pub threads: usize,
    pub backend: BackendChoice,
    pub progress: &'a dyn ProgressSink,
    /// Tables emitted so far; the orchestrator writes them out after `run` returns.
    pub tables: BTreeMap<String, Vec<Row>>,
}

impl StageContext<'_> {
    /// Append rows to the named result table (`<name>.parquet` / `<name>.csv`).
    pub fn emit_rows(&mut self, table: &str, rows: impl IntoIterator<Item = Row>) {
        self.tables.entry(table.to_owned()).or_default().extend(rows);
    }

    /// The single upstream instance of a fan-out reference parameter.
    pub fn input(&self, param: &str) -> Result<&InputArtifact, StageError> {
        self.optional_input(param)?.ok_or_else(|| StageError::NoInput { param: param.to_owned() })
    }

    /// The upstream instance of an optional reference: none when it is not set.
    pub fn optional_input(&self, param: &str) -> Result<Option<&InputArtifact>, StageError> {
        match self.inputs.get(param).map(Vec::as_slice) {
            Some([one]) => Ok(Some(one)),
            Some([]) | None => Ok(None),
            Some(many) => Err(StageError::Selects { param: param.to_owned(), found: many.len() }),
        }
    }

    /// All upstream instances of a reference parameter (empty if unset).
    pub fn inputs_of(&self, param: &str) -> &[InputArtifact] {
        self.inputs.get(param).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A stage failure. The message is what the user sees in the failure summary.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("invalid parameter: {0}")]
    Param(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A fan-out reference that selected nothing.
    #[error("no input for `{param}`")]
    NoInput { param: String },
    /// A reference that selected several instances where the kind reads one.
    #[error("`{param}` selects {found} instances where one was expected")]
    Selects { param: String, found: usize },
    /// The instance a reference names wrote no file of the kind the stage reads; `reads`
    /// says what the stage expects there.
    #[error("`{param}` refers to {instance} (kind {kind}), which wrote no {file}{}", reads.map(|r| format!(": {r}")).unwrap_or_default())]
    InputWroteNo { param: String, instance: String, kind: String, file: &'static str, reads: Option<&'static str> },
}

impl StageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StageError::Io { context: context.into(), source }
    }
}

/// What a stage's cache entry holds, as far as the stages reading it are concerned. Kinds
/// declare it ([`StageKind::produces`]) and `validate` checks every reference against what
/// the referring parameter needs ([`StageKind::needs`]) before anything runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Produces {
    /// `weights.safetensors`: a set of networks.
    pub weights: bool,
    /// The weight set's per-network integer columns (`run`, `epoch`, ...).
    pub network_columns: NetworkColumns,
    /// `flow.json` and its model: a trained flow.
    pub flow: bool,
    /// The tables it emits (`<name>.parquet`).
    pub tables: Vec<TableDecl>,
}

/// Where a weight set's per-network columns come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum NetworkColumns {
    /// These, written by the kind itself (none for a freshly sampled set).
    #[default]
    None,
    Own(&'static [&'static str]),
    /// Those of the weight set the named reference parameter reads, kept as they are.
    KeptFrom(&'static str),
}

/// One table a kind emits and the columns its rows may carry (not every row carries every
/// column: summary rows differ from per-network rows).
#[derive(Clone, Debug, PartialEq)]
pub struct TableDecl {
    pub name: &'static str,
    /// None where the columns follow from data the kind cannot know before it runs.
    pub columns: Option<Vec<String>>,
    /// Rows also carry the per-network columns of the weight set this parameter names.
    pub network_columns_of: Option<&'static str>,
    /// The columns whose values identify one row (a summary table's groups), if any.
    pub keyed_by: Option<Vec<String>>,
}

impl TableDecl {
    pub fn new(name: &'static str, columns: &[&str]) -> Self {
        Self::with_columns(name, columns.iter().map(|c| c.to_string()).collect())
    }
    pub fn with_columns(name: &'static str, columns: Vec<String>) -> Self {
        TableDecl { name, columns: Some(columns), network_columns_of: None, keyed_by: None }
    }
    /// A table whose columns are only known when it is written.
    pub fn undeclared(name: &'static str) -> Self {
        TableDecl { name, columns: None, network_columns_of: None, keyed_by: None }
    }
    pub fn with_network_columns_of(mut self, param: &'static str) -> Self {
        self.network_columns_of = Some(param);
        self
    }
    pub fn keyed_by(mut self, columns: Vec<String>) -> Self {
        self.keyed_by = Some(columns);
        self
    }
}

impl Produces {
    pub fn weights() -> Self {
        Produces { weights: true, ..Produces::default() }
    }
    pub fn tables(tables: &[TableDecl]) -> Self {
        Produces { tables: tables.to_vec(), ..Produces::default() }
    }
    pub fn with_tables(mut self, tables: &[TableDecl]) -> Self {
        self.tables.extend_from_slice(tables);
        self
    }
    pub fn with_network_columns(mut self, columns: NetworkColumns) -> Self {
        self.network_columns = columns;
        self
    }
    pub fn table(&self, name: &str) -> Option<&TableDecl> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Whether this satisfies `need` (columns are checked by the caller, which knows the
    /// instance's axes and inputs).
    pub fn satisfies(&self, need: &Needs) -> bool {
        match need {
            Needs::Anything => true,
            Needs::Weights => self.weights,
            Needs::Flow => self.flow,
            Needs::Table { name, .. } => self.table(name).is_some(),
        }
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.weights {
            parts.push("a weight set".to_owned());
        }
        if self.flow {
            parts.push("a trained flow".to_owned());
        }
        if !self.tables.is_empty() {
            let names: Vec<String> = self.tables.iter().map(|t| format!("`{}`", t.name)).collect();
            parts.push(format!("the table{} {}", if names.len() > 1 { "s" } else { "" }, names.join(", ")));
        }
        if parts.is_empty() {
            "nothing another stage reads".to_owned()
        } else {
            parts.join(" and ")
        }
    }
}

/// What a reference parameter needs each stage it names to produce.
#[derive(Clone, Debug, PartialEq)]
pub enum Needs {
    Anything,
    Weights,
    Flow,
    /// An emitted table of this name, with these columns (each named by a parameter), from
    /// which `picks` select single rows.
    Table { name: String, columns: Vec<ColumnUse>, picks: Vec<RowPick> },
}

/// A parameter that selects one row of a keyed table (one per value of `open`) by pinning
/// the table's key columns: it is ambiguous when a key column is neither pinned nor open.
#[derive(Clone, Debug, PartialEq)]
pub struct RowPick {
    pub param: &'static str,
    pub pinned: Vec<String>,
    /// Key columns left open on purpose (the axis of a trend).
    pub open: Vec<String>,
}

/// A column a parameter names, to be found in the gathered rows.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnUse {
    pub param: &'static str,
    pub column: String,
}

impl Needs {
    pub fn table(name: impl Into<String>) -> Self {
        Needs::Table { name: name.into(), columns: Vec::new(), picks: Vec::new() }
    }

    pub fn describe(&self) -> String {
        match self {
            Needs::Anything => "anything".into(),
            Needs::Weights => "a weight set".into(),
            Needs::Flow => "a trained flow".into(),
            Needs::Table { name, .. } => format!("a stage that emits the table `{name}`"),
        }
    }
}

/// A stage kind: the one seam between orchestration and science.
pub trait StageKind: Send + Sync {
    /// Kebab-case name used as `kind = "..."` in pipeline files.
    fn name(&self) -> &'static str;
    /// Bumped whenever the kind's outputs change for the same parameters; part of keys.
    fn version(&self) -> u32;
    /// One-line description for `wfpipe kinds`.
    fn about(&self) -> &'static str;
    /// The typed parameter schema with defaults.
    fn params(&self) -> Vec<ParamSpec>;
    /// Cross-parameter checks run at plan time, before anything computes.
    fn validate(&self, _params: &Params) -> Result<(), StageError> {
        Ok(())
    }
    /// Default resource request for these parameters.
    fn resources(&self, _params: &Params) -> Resources {
        Resources::default()
    }
    /// A digest of data compiled into the program that this instance's result depends on
    /// beyond its parameters (the thesis's reference values a table or figure draws). It
    /// enters the cache key, so a build with other data recomputes the result.
    fn builtin_data_digest(&self, _params: &Params) -> Option<String> {
        None
    }
    /// Estimated floating-point operations, for `plan` (None when unknown). `params` holds
    /// the instance's own parameters and, for names it lacks, those of its upstream
    /// instances, nearest first (the dataset a weight set came from, the size of the flow
    /// being sampled).
    fn estimate_flops(&self, _params: &Params) -> Option<f64> {
        None
    }
    /// What an instance with these parameters leaves in its entry for other stages; None
    /// when the kind cannot know (a user program).
    fn produces(&self, _params: &Params) -> Option<Produces> {
        None
    }
    /// Files for other tools, derived from a computed entry's output folder on request
    /// (`wfpipe export`) and never stored in the cache: `(file name, bytes)`. None by default.
    fn exports(&self, _out_dir: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>, StageError> {
        Ok(Vec::new())
    }
    /// What the reference parameter `param` needs the stages it names to produce.
    fn needs(&self, _param: &str, _params: &Params) -> Needs {
        Needs::Anything
    }
    /// Compute the outputs into `ctx.out_dir`.
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(instance: &str, dir: &Path) -> InputArtifact {
        InputArtifact { instance: instance.into(), kind: "toy-data".into(), axes: BTreeMap::new(), key: "k".into(), dir: dir.to_owned() }
    }

    /// How a kind reads its references: one, none, or too many, each an error with the
    /// parameter and the count as fields.
    #[test]
    fn references_read_as_one_none_or_an_error_with_fields() {
        let dir = std::env::temp_dir();
        let inputs = BTreeMap::from([
            ("one".to_owned(), vec![artifact("a", &dir)]),
            ("two".to_owned(), vec![artifact("a", &dir), artifact("b", &dir)]),
            ("none".to_owned(), Vec::new()),
        ]);
        let (params, axes) = (Params::default(), BTreeMap::new());
        let ctx = StageContext {
            params: &params,
            inputs: &inputs,
            axes: &axes,
            out_dir: &dir,
            scratch_dir: &dir,
            project_dir: &dir,
            data_dir: &dir,
            seed: 0,
            threads: 1,
            backend: BackendChoice::Cpu,
            progress: &NoProgress,
            tables: BTreeMap::new(),
        };
        assert_eq!(ctx.input("one").unwrap().instance, "a");
        assert!(ctx.optional_input("none").unwrap().is_none());
        assert!(ctx.optional_input("unset").unwrap().is_none());
        assert!(matches!(ctx.input("none"), Err(StageError::NoInput { ref param }) if param == "none"));
        let err = ctx.optional_input("two").unwrap_err();
        assert!(matches!(err, StageError::Selects { ref param, found: 2 } if param == "two"));
        assert_eq!(err.to_string(), "`two` selects 2 instances where one was expected");
    }

    #[test]
    fn a_missing_input_file_names_the_instance_its_kind_and_what_the_stage_reads() {
        let dir = std::env::temp_dir().join(format!("wfpipe-kind-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("present.txt"), "x").unwrap();
        let a = artifact("up[x=1]", &dir);
        assert_eq!(a.require_file("weights", "present.txt", None).unwrap(), dir.join("present.txt"));
        let err = a.require_file("weights", "weights.safetensors", Some("it reads weight sets")).unwrap_err();
        assert!(matches!(err, StageError::InputWroteNo { file: "weights.safetensors", .. }));
        assert_eq!(err.to_string(), "`weights` refers to up[x=1] (kind toy-data), which wrote no weights.safetensors: it reads weight sets");
        let bare = a.require_file("targets", "weights.safetensors", None).unwrap_err().to_string();
        assert_eq!(bare, "`targets` refers to up[x=1] (kind toy-data), which wrote no weights.safetensors");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
