//! The `command` kind: a user program in the DAG.
//!
//! `cmd` is an argv list run without a shell (placeholders such as `{seed}` replace whole
//! words, so parameter values are never re-parsed by a shell) unless `shell = true`.
//! The program runs in an empty work folder; the files it declares in `outputs` are moved
//! into the cache entry. Declared `inputs` files are hashed into the key.
//!
//! Placeholders (in `cmd`) and environment variables:
//! `{out}`/`WFPIPE_OUT` work folder, `{project}`/`WFPIPE_PROJECT`, `{seed}`/`WFPIPE_SEED`,
//! `{input}`/`WFPIPE_INPUT` the fan-out input's folder, `{deps}` (one word per folder) /
//! `WFPIPE_DEPS` (`:`-separated), and `{NAME}` for each `env` entry.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;

use wfpipe_stages::kind::{ParamSpec, ParamType, Params, RefMode, StageContext, StageError, StageKind, Value};

use crate::pipeline::check::check_relative_path;

pub struct Command;

impl StageKind for Command {
    fn name(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "run a program (argv list) with declared inputs and outputs"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("cmd", ParamType::StrList, "program and arguments"),
            ParamSpec::with_default("shell", ParamType::Bool, Value::Bool(false), "run `cmd` joined by spaces through `sh -c`"),
            ParamSpec::with_default("inputs", ParamType::FileList, Value::List(vec![]), "files read by the program (hashed into the key)"),
            ParamSpec::with_default("outputs", ParamType::StrList, Value::List(vec![]), "files the program writes, moved into the entry"),
            ParamSpec::with_default("deps", ParamType::RefList, Value::List(vec![]), "stages whose outputs the program reads (gathered)"),
            ParamSpec::optional_ref("input", RefMode::FanOut, "a stage to fan out over, one run per instance"),
            ParamSpec::with_default("env", ParamType::StrMap, Value::Table(BTreeMap::new()), "environment variables (sweepable: matrix.env.NAME)"),
        ]
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        if params.str_list("cmd")?.is_empty() {
            return Err(StageError::Param("`cmd` must name a program".into()));
        }
        for out in params.str_list("outputs")? {
            check_relative_path(&out).map_err(|why| StageError::Param(format!("`outputs`: {why}")))?;
        }
        for name in params.str_map("env")?.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(StageError::Param(format!("`env.{name}` is not a valid variable name")));
            }
        }
        Ok(())
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let params = ctx.params;
        let work = ctx.scratch_dir.join("work");
        if work.exists() {
            std::fs::remove_dir_all(&work).map_err(|e| StageError::io("cleaning the work folder", e))?;
        }
        std::fs::create_dir_all(&work).map_err(|e| StageError::io("creating the work folder", e))?;
        let work = work.canonicalize().map_err(|e| StageError::io("resolving the work folder", e))?;
        let project = ctx.project_dir.canonicalize().map_err(|e| StageError::io("resolving the project folder", e))?;
        let input = ctx.inputs_of("input").first().map(|a| a.dir.display().to_string()).unwrap_or_default();
        let deps: Vec<String> = ctx.inputs_of("deps").iter().map(|a| a.dir.display().to_string()).collect();
        let env = params.str_map("env")?;
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("out".into(), work.display().to_string());
        vars.insert("project".into(), project.display().to_string());
        vars.insert("seed".into(), ctx.seed.to_string());
        vars.insert("input".into(), input.clone());
        for (k, v) in &env {
            vars.insert(k.clone(), v.clone());
        }
        let mut argv: Vec<String> = Vec::new();
        for word in params.str_list("cmd")? {
            if word == "{deps}" {
                argv.extend(deps.iter().cloned());
            } else {
                argv.push(substitute(&word, &vars));
            }
        }
        let mut process = if params.bool("shell")? {
            let mut p = Process::new("sh");
            p.arg("-c").arg(argv.join(" "));
            p
        } else {
            let mut p = Process::new(&argv[0]);
            p.args(&argv[1..]);
            p
        };
        process
            .current_dir(&work)
            .env("WFPIPE_OUT", &work)
            .env("WFPIPE_PROJECT", &project)
            .env("WFPIPE_SEED", ctx.seed.to_string())
            .env("WFPIPE_INPUT", &input)
            .env("WFPIPE_DEPS", deps.join(":"))
            .envs(&env);
        tracing::info!(program = %argv[0], "running command");
        let status = process
            .status()
            .map_err(|e| StageError::io(format!("cannot start `{}`", argv[0]), e))?;
        if !status.success() {
            return Err(StageError::Failed(match status.code() {
                Some(code) => format!("`{}` exited with status {code}", argv[0]),
                None => format!("`{}` was killed by a signal", argv[0]),
            }));
        }
        for out in params.str_list("outputs")? {
            move_output(&work, &out, ctx.out_dir)?;
        }
        Ok(())
    }
}

fn substitute(word: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = word.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn move_output(work: &Path, rel: &str, out_dir: &Path) -> Result<(), StageError> {
    let from = work.join(rel);
    if !from.exists() {
        return Err(StageError::Failed(format!("declared output `{rel}` was not written")));
    }
    let to = out_dir.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StageError::io("creating the output folder", e))?;
    }
    std::fs::rename(&from, &to).map_err(|e| StageError::io(format!("moving output `{rel}`"), e))
}
