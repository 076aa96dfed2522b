//! SLURM settings: the `[executor.slurm]` table of a pipeline, overridden by the command
//! line (`--slurm-partition`, `--slurm-flag`, ...).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use wfpipe_stages::kind::Value;

/// SLURM options of `wfpipe run` (flattened into its arguments).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SlurmArgs {
    /// SLURM partition (`sbatch --partition`) [default: `executor.slurm.partition`].
    #[arg(long)]
    pub slurm_partition: Option<String>,
    /// SLURM account (`sbatch --account`).
    #[arg(long)]
    pub slurm_account: Option<String>,
    /// SLURM quality of service (`sbatch --qos`).
    #[arg(long)]
    pub slurm_qos: Option<String>,
    /// Extra `sbatch` flag, repeatable (`--slurm-flag=--constraint=a100`).
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    pub slurm_flag: Vec<String>,
    /// Largest job array to submit; bigger sweeps are split [default: 1000, capped by MaxArraySize].
    #[arg(long)]
    pub slurm_array_limit: Option<usize>,
    /// Pack up to N instances into one worker job that pulls keys from a queue in the
    /// cache (for many short instances) [default: 1 = one job per instance].
    #[arg(long, value_name = "N")]
    pub slurm_pack: Option<usize>,
}

/// Resolved settings.
#[derive(Clone, Debug)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub extra: Vec<String>,
    pub array_limit: usize,
    /// Instances per worker job; 1 = one SLURM job (or array task) per instance.
    pub pack: usize,
    /// Most worker jobs at once when packing.
    pub max_workers: usize,
    /// How often the queue is asked (`squeue`).
    pub poll: Duration,
    /// Ask SLURM to cancel jobs whose dependencies failed (`--kill-on-invalid-dep=yes`).
    pub kill_invalid_dep: bool,
    /// The wfpipe binary the compute nodes run [default: this one].
    pub wfpipe: Option<PathBuf>,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            partition: None,
            account: None,
            qos: None,
            extra: Vec::new(),
            array_limit: 1000,
            pack: 1,
            max_workers: 16,
            poll: Duration::from_millis(1000),
            kill_invalid_dep: true,
            wfpipe: None,
        }
    }
}

const KEYS: &[&str] = &["partition", "account", "qos", "extra", "array_limit", "pack", "max_workers", "poll_ms", "kill_invalid_dep", "wfpipe"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown key `executor.slurm.{key}`{hint}; known keys: {}", KEYS.join(", "))]
    Unknown { key: String, hint: String },
    #[error("`executor.slurm.{key}` must be {expected}")]
    Type { key: String, expected: &'static str },
}

fn string(key: &str, v: &Value) -> Result<String, ConfigError> {
    v.as_str().map(str::to_owned).ok_or_else(|| ConfigError::Type { key: key.into(), expected: "a string" })
}

fn positive(key: &str, v: &Value) -> Result<usize, ConfigError> {
    match v {
        Value::Int(n) if *n >= 1 => Ok(*n as usize),
        _ => Err(ConfigError::Type { key: key.into(), expected: "a positive integer" }),
    }
}

impl SlurmConfig {
    /// The pipeline's `[executor.slurm]` table, then the command line on top.
    pub fn resolve(table: &BTreeMap<String, Value>, args: &SlurmArgs) -> Result<SlurmConfig, ConfigError> {
        let mut c = SlurmConfig::default();
        for (k, v) in table {
            match k.as_str() {
                "partition" => c.partition = Some(string(k, v)?),
                "account" => c.account = Some(string(k, v)?),
                "qos" => c.qos = Some(string(k, v)?),
                "extra" => {
                    let Value::List(items) = v else {
                        return Err(ConfigError::Type { key: k.clone(), expected: "a list of strings like [\"--constraint=a100\"]" });
                    };
                    c.extra = items.iter().map(|i| string(k, i)).collect::<Result<_, _>>()?;
                }
                "array_limit" => c.array_limit = positive(k, v)?,
                "pack" => c.pack = positive(k, v)?,
                "max_workers" => c.max_workers = positive(k, v)?,
                "poll_ms" => c.poll = Duration::from_millis(positive(k, v)? as u64),
                "kill_invalid_dep" => {
                    c.kill_invalid_dep = match v {
                        Value::Bool(b) => *b,
                        _ => return Err(ConfigError::Type { key: k.clone(), expected: "true or false" }),
                    }
                }
                "wfpipe" => c.wfpipe = Some(PathBuf::from(string(k, v)?)),
                other => {
                    let hint = crate::pipeline::diagnostic::closest(other, KEYS.iter().copied())
                        .map(|c| format!(" (did you mean `{c}`?)"))
                        .unwrap_or_default();
                    return Err(ConfigError::Unknown { key: other.into(), hint });
                }
            }
        }
        if args.slurm_partition.is_some() {
            c.partition = args.slurm_partition.clone();
        }
        if args.slurm_account.is_some() {
            c.account = args.slurm_account.clone();
        }
        if args.slurm_qos.is_some() {
            c.qos = args.slurm_qos.clone();
        }
        c.extra.extend(args.slurm_flag.iter().cloned());
        if let Some(n) = args.slurm_array_limit {
            c.array_limit = n.max(1);
        }
        if let Some(n) = args.slurm_pack {
            c.pack = n.max(1);
        }
        Ok(c)
    }

    /// Flags every job of a run carries.
    pub fn common_flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(p) = &self.partition {
            f.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.account {
            f.push(format!("--account={a}"));
        }
        if let Some(q) = &self.qos {
            f.push(format!("--qos={q}"));
        }
        f.extend(self.extra.iter().cloned());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_then_command_line() {
        let mut t = BTreeMap::new();
        t.insert("partition".to_owned(), Value::Str("gpu".into()));
        t.insert("extra".to_owned(), Value::List(vec![Value::Str("--constraint=a100".into())]));
        t.insert("array_limit".to_owned(), Value::Int(10));
        let args = SlurmArgs { slurm_qos: Some("short".into()), slurm_flag: vec!["--exclusive".into()], ..Default::default() };
        let c = SlurmConfig::resolve(&t, &args).unwrap();
        assert_eq!(c.array_limit, 10);
        assert_eq!(c.common_flags(), vec!["--partition=gpu", "--qos=short", "--constraint=a100", "--exclusive"]);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let mut t = BTreeMap::new();
        t.insert("partiton".to_owned(), Value::Str("gpu".into()));
        let e = SlurmConfig::resolve(&t, &SlurmArgs::default()).unwrap_err().to_string();
        assert!(e.contains("did you mean `partition`"), "{e}");
        let mut t = BTreeMap::new();
        t.insert("pack".to_owned(), Value::Str("4".into()));
        assert!(SlurmConfig::resolve(&t, &SlurmArgs::default()).is_err());
    }
}
