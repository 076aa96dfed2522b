//! The `command` kind: a user program in the DAG.
//!
//! `cmd` is an argv list run without a shell unless `shell = true`. With `shell = true` the
//! first word is shell text for `sh -c` and every later word is one argument, appended
//! shell-quoted, so `["grep -c x", "a b; c"]` runs `grep -c x 'a b; c'`. A placeholder that is
//! a whole word (`"{seed}"`) becomes that argument unchanged, so its value is never
//! re-parsed by anything. A placeholder of an `env` value inside a longer word
//! (`"echo {N}"` for `sh -c`) is refused, because a swept value such as `$(rm -rf ~)`
//! would be run as shell text; with `shell_quote = true` every placeholder inside a longer
//! word is inserted shell-quoted instead. Environment variables always carry raw values.
//!
//! Each attempt runs the program in a new, empty work folder that no earlier attempt can
//! reach; the files it declares in `outputs` are moved into the cache entry. The program
//! dies with the process that started it. Declared `inputs` files are hashed into the key.
//!
//! Placeholders (in `cmd`) and environment variables:
//! `{out}`/`WFPIPE_OUT` work folder, `{project}`/`WFPIPE_PROJECT`, `{seed}`/`WFPIPE_SEED`,
//! `{input}`/`WFPIPE_INPUT` the fan-out input's folder, `{deps}` (one word per folder) /
//! `WFPIPE_DEPS` (`:`-separated), and `{NAME}` for each `env` entry.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command as Process;

use wfpipe_stages::declare::{KindParams, StageRef};
use wfpipe_stages::kind::{ParamSpec, ParamType as T, Params, RefMode, StageContext, StageError, StageKind};
use wfpipe_stages::kind_params;

use crate::project_path::check_relative_path;

pub struct Command;

kind_params! {
    /// The parameters of one `command` instance, declared once.
    struct Args {
        cmd: Vec<String> = required, "program and arguments";
        shell: bool = default(false), "run the first word of `cmd` as `sh -c` text, each later word one shell-quoted argument";
        inputs: Vec<String> [T::FileList] = default(Vec::new()), "files read by the program (hashed into the key)";
        outputs: Vec<String> = default(Vec::new()), "files the program writes, moved into the entry";
        deps: Vec<String> [T::RefList] = default(Vec::new()), "stages whose outputs the program reads (gathered)";
        input: StageRef [T::Ref { mode: RefMode::FanOut }] = default(StageRef::NONE), "a stage to fan out over, one run per instance";
        env: BTreeMap<String, String> = default(BTreeMap::new()), "environment variables (sweepable: matrix.env.NAME)";
        shell_quote: bool = added(false), "insert placeholders inside longer words shell-quoted (for `sh -c` strings)";
    }
}

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
        Args::schema()
    }
    fn validate(&self, params: &Params) -> Result<(), StageError> {
        let Args { cmd, env, shell_quote, outputs, .. } = Args::parse(params)?;
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(StageError::Param("`cmd` must name a program".into()));
        }
        for name in env.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(StageError::Param(format!("`env.{name}` is not a valid variable name")));
            }
        }
        // A NUL cannot be passed to a program: it would end the argument early.
        if let Some(word) = cmd.iter().chain(env.values()).find(|w| w.contains('\0')) {
            return Err(StageError::Param(format!("`cmd` or `env` holds a NUL byte (in {word:?})")));
        }
        if !shell_quote {
            for word in &cmd {
                if let Some(name) = env.keys().find(|name| word.contains(&format!("{{{name}}}")) && *word != format!("{{{name}}}")) {
                    return Err(StageError::Param(format!(
                        "`cmd` word \"{word}\" embeds the value placeholder `{{{name}}}`, which a shell would re-parse; \
                         make `{{{name}}}` a whole word, read `${name}` inside the program, or set `shell_quote = true`"
                    )));
                }
            }
        }
        for (i, out) in outputs.iter().enumerate() {
            check_relative_path(out).map_err(|why| StageError::Param(format!("`outputs`: {why}")))?;
            if !Path::new(out).components().any(|c| matches!(c, Component::Normal(_))) {
                return Err(StageError::Param(format!("`outputs`: `{out}` is the work folder itself; name the files")));
            }
            for other in &outputs[..i] {
                let (a, b) = (Path::new(out), Path::new(other));
                if a.starts_with(b) || b.starts_with(a) {
                    return Err(StageError::Param(format!("`outputs`: `{out}` and `{other}` name the same file twice")));
                }
            }
        }
        Ok(())
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> Result<(), StageError> {
        let args = Args::parse(ctx.params)?;
        let work = fresh_work_folder(ctx.scratch_dir)?;
        let project = ctx.project_dir.canonicalize().map_err(|e| StageError::io("resolving the project folder", e))?;
        let input = ctx.inputs_of("input").first().map(|a| a.dir.display().to_string()).unwrap_or_default();
        let deps: Vec<String> = ctx.inputs_of("deps").iter().map(|a| a.dir.display().to_string()).collect();
        let env = &args.env;
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("out".into(), work.display().to_string());
        vars.insert("project".into(), project.display().to_string());
        vars.insert("seed".into(), ctx.seed.to_string());
        vars.insert("input".into(), input.clone());
        for (k, v) in env {
            vars.insert(k.clone(), v.clone());
        }
        let mut argv: Vec<String> = Vec::new();
        for word in &args.cmd {
            if word == "{deps}" {
                argv.extend(deps.iter().cloned());
            } else {
                argv.push(substitute(word, &vars, args.shell_quote));
            }
        }
        let mut process = if args.shell {
            let mut p = Process::new("sh");
            p.arg("-c").arg(shell_text(&argv));
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
            .envs(env);
        die_with_parent(&mut process);
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
        for out in &args.outputs {
            move_output(&work, out, ctx.out_dir)?;
        }
        Ok(())
    }
}

/// The `sh -c` text of `shell = true`: the first word as written, then each later word
/// quoted so that the shell passes it on as one argument.
fn shell_text(argv: &[String]) -> String {
    let mut text = argv[0].clone();
    for word in &argv[1..] {
        text.push(' ');
        // try_quote refuses only NUL bytes, which no process argument can carry anyway.
        let word = word.replace('\0', "");
        text.push_str(&shlex::try_quote(&word).expect("no NUL byte is left to refuse"));
    }
    text
}

/// Replace placeholders in one `cmd` word: a whole-word placeholder by its raw value,
/// placeholders inside a longer word raw, or shell-quoted under `shell_quote`.
fn substitute(word: &str, vars: &BTreeMap<String, String>, quote: bool) -> String {
    if let Some(v) = word.strip_prefix('{').and_then(|w| w.strip_suffix('}')).and_then(|name| vars.get(name)) {
        return v.clone();
    }
    let mut out = word.to_owned();
    for (k, v) in vars {
        let value = if quote { shlex::try_quote(v).map(|q| q.into_owned()).unwrap_or_else(|_| v.clone()) } else { v.clone() };
        out = out.replace(&format!("{{{k}}}"), &value);
    }
    out
}

/// A new work folder for this attempt, after removing those of earlier attempts: a program
/// an earlier attempt left running can only ever write into a folder that is gone.
fn fresh_work_folder(scratch: &Path) -> Result<PathBuf, StageError> {
    if let Ok(entries) = std::fs::read_dir(scratch) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "work" || name.starts_with("work-") {
                std::fs::remove_dir_all(e.path()).map_err(|e| StageError::io("cleaning an earlier work folder", e))?;
            }
        }
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let work = scratch.join(format!("work-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| StageError::io("creating the work folder", e))?;
    work.canonicalize().map_err(|e| StageError::io("resolving the work folder", e))
}

/// The program is killed when the thread that started it dies (a killed `exec-stage`),
/// instead of living on as an orphan.
fn die_with_parent(process: &mut Process) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        process.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

/// Move one declared output into the entry. The output and every folder on the way to it
/// must be real (no symbolic links): a link would move or publish something outside the
/// work folder, or something whose content can change after publication.
fn move_output(work: &Path, rel: &str, out_dir: &Path) -> Result<(), StageError> {
    let mut at = work.to_path_buf();
    for part in Path::new(rel).components() {
        if let Component::Normal(name) = part {
            at.push(name);
            match std::fs::symlink_metadata(&at) {
                Err(_) => return Err(StageError::Failed(format!("declared output `{rel}` was not written"))),
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StageError::Failed(format!(
                        "declared output `{rel}` goes through the symbolic link `{}`; outputs must be files the program wrote",
                        at.strip_prefix(work).unwrap_or(&at).display()
                    )))
                }
                Ok(_) => {}
            }
        }
    }
    if let Some(link) = first_symlink_below(&at) {
        return Err(StageError::Failed(format!("declared output `{rel}` holds the symbolic link `{}`", link.display())));
    }
    let to = out_dir.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| StageError::io("creating the output folder", e))?;
    }
    std::fs::rename(&at, &to).map_err(|e| StageError::io(format!("moving output `{rel}`"), e))
}

fn first_symlink_below(dir: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let t = e.file_type().ok()?;
        if t.is_symlink() {
            return Some(e.path());
        }
        if t.is_dir() {
            if let Some(found) = first_symlink_below(&e.path()) {
                return Some(found);
            }
        }
    }
    None
}
