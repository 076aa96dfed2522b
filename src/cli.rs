//! The command-line interface: a clap tree whose commands each make one `ops` call.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use wfpipe_stages::kind::BackendChoice;

use crate::executor::slurm::SlurmArgs;
use crate::ops::{self, dag::DagFormat, run::{ExecutorChoice, RunOptions}};
use crate::render::Mode;

#[derive(Parser, Debug)]
#[command(name = "wfpipe", version, about = "Declarative, content-addressed experiment pipelines for flow models over neural-network weights")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Errors only: no progress, no warnings, no status lines.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Log format: `text` for people, `json` for machines (also makes `run` emit JSON events).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Override a parameter: `--set stage.key=value` (TOML value syntax).
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Cache folder [default: cache/ beside the project; env WFPIPE_CACHE].
    #[arg(long, env = "WFPIPE_CACHE")]
    pub cache: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compute every instance that is not cached.
    #[command(after_help = "Examples:\n  wfpipe run pipelines/quick.toml
  wfpipe run pipelines/uci-flows.toml -j 2 --keep-going
  wfpipe run pipelines/quick.toml \"uci-flow-euclidean[coupling=ot]\" --set 'uci-flow-*.iterations=500'
  wfpipe run pipelines/thesis.toml --executor slurm --detach")]
    Run {
        #[command(flatten)]
        p: PipelineArgs,
        /// Only these stages, instances or selections `stage[axis=value,...]` (and what they need).
        targets: Vec<String>,
        /// Folder holding mnist/ and fashion-mnist/ [default: data/ beside the project; env WFPIPE_DATA].
        #[arg(long, env = "WFPIPE_DATA")]
        data_dir: Option<PathBuf>,
        /// Instances running at once [default: number of CPUs].
        #[arg(short, long, value_parser = at_least::<1>)]
        jobs: Option<usize>,
        /// CPUs to use [default: all].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        cpus: Option<u32>,
        /// GPUs to use [default: all found].
        #[arg(long)]
        gpus: Option<u32>,
        /// Memory budget in MiB, at least 64 [default: the machine's].
        #[arg(long, value_parser = clap::value_parser!(u64).range(64..))]
        mem_mb: Option<u64>,
        /// Run every branch that does not depend on a failure.
        #[arg(long)]
        keep_going: bool,
        /// Print the plan and compute nothing.
        #[arg(long)]
        dry_run: bool,
        /// Compute backend for stages that request GPUs.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendArg,
        /// Where instances run: this machine, or SLURM jobs (the cache must be on a
        /// filesystem the compute nodes share).
        #[arg(long, value_enum, default_value = "local", env = "WFPIPE_EXECUTOR")]
        executor: ExecutorChoice,
        /// With `--executor slurm`: submit and return; `status` and `run` follow up.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        slurm: SlurmArgs,
    },
    /// Check a pipeline file; writes nothing.
    #[command(after_help = "Examples:\n  wfpipe validate pipelines/quick.toml")]
    Validate {
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Every instance: cached, or to run and why.
    #[command(after_help = "Examples:\n  wfpipe plan pipelines/quick.toml
  wfpipe plan pipelines/thesis.toml --set '*.attention=\"layer-blocks\"'
  wfpipe plan pipelines/quick.toml --format json | jq '.instances[0]'")]
    Plan {
        #[command(flatten)]
        p: PipelineArgs,
        /// `json`: one document for scripts.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Counts of cached, running, failed and pending instances.
    #[command(after_help = "Examples:\n  wfpipe status pipelines/quick.toml
  wfpipe status pipelines/quick.toml --format json")]
    Status {
        #[command(flatten)]
        p: PipelineArgs,
        /// `json`: one document for scripts.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Why an instance will run: the full difference to its last computed key.
    #[command(after_help = "Examples:\n  wfpipe why pipelines/quick.toml quick-flow
  wfpipe why pipelines/quick.toml 'quick-flow[geometry=euclidean]'")]
    Why {
        #[command(flatten)]
        p: PipelineArgs,
        /// Instance id, e.g. `flow[geometry=euclidean]`; a stage or a selection
        /// `stage[axis=value]` with several instances lists them with their state.
        instance: String,
    },
    /// The instance graph.
    #[command(after_help = "Examples:\n  wfpipe dag pipelines/quick.toml
  wfpipe dag pipelines/quick.toml --format dot | dot -Tsvg > dag.svg")]
    Dag {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long, value_enum, default_value = "text")]
        format: DagFormat,
    },
    /// Rebuild reports/<pipeline>/index.md from the cache (computes nothing).
    #[command(after_help = "Examples:\n  wfpipe report pipelines/quick.toml")]
    Report {
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Copy cached outputs out of the cache, with files for other tools (a trained flow as
    /// safetensors); computes nothing.
    #[command(after_help = "Examples:\n  wfpipe export pipelines/quick.toml toy-flow --to exports\n  wfpipe export pipelines/quick.toml 'uci-flow-euclidean[coupling=ot]'")]
    Export {
        #[command(flatten)]
        p: PipelineArgs,
        /// An instance id, a stage, or a selection `stage[axis=value,...]`.
        target: String,
        /// Folder that receives one folder per instance.
        #[arg(long, default_value = "exports")]
        to: PathBuf,
    },
    /// Stage kinds and their parameters.
    #[command(after_help = "Examples:\n  wfpipe kinds
  wfpipe kinds train-flow")]
    Kinds {
        /// Show one kind's parameters.
        kind: Option<String>,
    },
    /// Download MNIST and Fashion-MNIST into the data folder, or show what it holds.
    #[command(after_help = "Examples:\n  wfpipe data status
  wfpipe data fetch mnist
  wfpipe data fetch all --from https://mirror.example.org/wfpipe-data")]
    Data {
        /// Folder holding mnist/ and fashion-mnist/ [env WFPIPE_DATA; default data/].
        #[arg(long, env = "WFPIPE_DATA", default_value = "data", global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Inspect and maintain the cache.
    #[command(after_help = "Examples:\n  wfpipe cache ls --format json
  wfpipe cache verify
  wfpipe cache gc pipelines/*.toml --max-size 20G --apply")]
    Cache {
        /// Cache folder [env WFPIPE_CACHE; default cache/].
        #[arg(long, env = "WFPIPE_CACHE", default_value = "cache", global = true)]
        cache: PathBuf,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Benchmarks of wfpipe itself.
    #[command(after_help = "Examples:\n  wfpipe bench plan --instances 100000")]
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  wfpipe completions bash > ~/.local/share/bash-completion/completions/wfpipe\n  wfpipe completions zsh > \"${fpath[1]}/_wfpipe\"\n  wfpipe completions fish > ~/.config/fish/completions/wfpipe.fish")]
    Completions {
        shell: clap_complete::Shell,
    },
    /// Compute one key (used by executors).
    #[command(hide = true)]
    ExecStage {
        #[arg(long)]
        cache: PathBuf,
        job: PathBuf,
    },
    /// Compute keys from a SLURM worker queue folder (used by `--slurm-pack`).
    #[command(hide = true)]
    SlurmWorker {
        #[arg(long)]
        cache: PathBuf,
        /// Stop after this many keys.
        #[arg(long, default_value_t = usize::MAX)]
        max: usize,
        queue: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time load/plan/status on a generated pipeline.
    Plan {
        /// Instances of the generated sweep-and-fan-out pipeline.
        #[arg(long, default_value_t = 10_000)]
        instances: usize,
        /// Instead: one stage swept over axes of these sizes, e.g. `100000` or `100,100,10`.
        #[arg(long, value_delimiter = ',')]
        axes: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
}

/// How `plan`, `status` and `cache ls` print: for people, or one JSON document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Cpu,
    Cuda,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download the missing or invalid IDX files (resuming partial ones) and check them.
    Fetch {
        /// `mnist`, `fashion-mnist` or `all`.
        #[arg(default_value = "all", value_parser = ops::data::parse_which)]
        which: Vec<Vec<wfpipe_stages::data::DatasetName>>,
        /// A mirror holding `<url>/mnist/*.gz` and `<url>/fashion-mnist/*.gz` instead of the public locations.
        #[arg(long, env = "WFPIPE_DATA_URL")]
        from: Option<String>,
    },
    /// Each file: present and valid, missing or invalid (exit code 1 unless all are valid).
    Status,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List entries.
    Ls {
        /// `json`: one document for scripts.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
    /// Disk usage.
    Du,
    /// Re-hash every entry; quarantine corrupt ones (they are recomputed next run).
    Verify {
        /// Report only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove entries no named pipeline reaches (dry run unless --apply).
    Gc {
        /// Pipelines whose instances are kept.
        pipelines: Vec<PathBuf>,
        /// Remove unreachable entries, oldest first, only until the cache is this small (e.g. 2G).
        #[arg(long, value_parser = ops::cache_cmd::parse_size)]
        max_size: Option<u64>,
        /// Really delete.
        #[arg(long)]
        apply: bool,
    },
}

fn cache_path(p: &PipelineArgs, pipeline: &crate::pipeline::Pipeline) -> PathBuf {
    ops::Paths::resolve(p.cache.clone(), None, pipeline).cache
}

/// Run the parsed command; returns the exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run { p, targets, data_dir, jobs, cpus, gpus, mem_mb, keep_going, dry_run, backend, executor, detach, slurm } => {
            let o = RunOptions {
                overrides: p.overrides.clone(),
                cache: p.cache.clone(),
                data: data_dir,
                jobs,
                cpus,
                gpus,
                mem_mb,
                keep_going,
                dry_run,
                backend: match backend {
                    BackendArg::Cpu => BackendChoice::Cpu,
                    BackendArg::Cuda => BackendChoice::Cuda,
                },
                mode: Mode::choose(cli.quiet, cli.log_format == LogFormat::Json),
                targets,
                executor,
                detach,
                slurm,
            };
            ops::run::run(&p.pipeline, &o)
        }
        Command::Validate { p } => {
            let (pipeline, _) = ops::load(&p.pipeline, &p.overrides)?;
            println!(
                "{}: ok, {} stages, {} instances",
                p.pipeline.display(),
                pipeline.stages.len(),
                pipeline.instances.len()
            );
            Ok(0)
        }
        Command::Plan { p, format } => {
            let (pipeline, _) = ops::load(&p.pipeline, &p.overrides)?;
            let cache = ops::open_cache(&cache_path(&p, &pipeline))?;
            let planned = ops::plan::plan(&pipeline, &cache);
            match format {
                OutputFormat::Text => out(&ops::plan::render_plan(&pipeline, &planned)),
                OutputFormat::Json => out(&ops::plan::render_plan_json(&pipeline, &planned)),
            }
            Ok(0)
        }
        Command::Status { p, format } => {
            let (pipeline, _) = ops::load(&p.pipeline, &p.overrides)?;
            let cache = ops::open_cache(&cache_path(&p, &pipeline))?;
            let view = ops::plan::status_view(&pipeline, &cache);
            match format {
                OutputFormat::Text => out(&ops::plan::render_status(&view)),
                OutputFormat::Json => out(&format!("{}\n", serde_json::to_string_pretty(&view)?)),
            }
            Ok(0)
        }
        Command::Why { p, instance } => {
            let (pipeline, _) = ops::load(&p.pipeline, &p.overrides)?;
            let cache = ops::open_cache(&cache_path(&p, &pipeline))?;
            out(&ops::plan::render_why(&pipeline, &cache, &instance)?);
            Ok(0)
        }
        Command::Dag { p, format } => {
            let (pipeline, _) = ops::load(&p.pipeline, &p.overrides)?;
            let cache = ops::open_cache(&cache_path(&p, &pipeline))?;
            out(&ops::dag::render(&pipeline, &cache, format));
            Ok(0)
        }
        Command::Report { p } => ops::report::report(&p.pipeline, &p.overrides, p.cache.clone()),
        Command::Export { p, target, to } => {
            let said = ops::export::export(&p.pipeline, &p.overrides, p.cache.clone(), &target, &to)?;
            if !cli.quiet {
                out(&said);
            }
            Ok(0)
        }
        Command::Kinds { kind } => {
            out(&ops::kinds_text(kind.as_deref())?);
            Ok(0)
        }
        Command::Data { data_dir, command } => data(&data_dir, command, cli.quiet),
        Command::Cache { cache, command } => cache_command(&cache, command),
        Command::Bench { command: BenchCommand::Plan { instances, axes, reps } } => {
            let dir = crate::scratch::ScratchDir::new("bench")?;
            let result = ops::bench::bench_plan(instances, &axes, reps.max(1), dir.path());
            out(&result?);
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "wfpipe", &mut script);
            out(&String::from_utf8_lossy(&script));
            Ok(0)
        }
        Command::ExecStage { cache, job } => {
            let registry = crate::kinds::Registry::standard();
            Ok(crate::exec_stage::exec(&cache, &job, &registry))
        }
        Command::SlurmWorker { cache, max, queue } => Ok(crate::executor::slurm::pack::run_worker(&cache, &queue, max)),
    }
}

/// `wfpipe data ...`.
fn data(data_dir: &std::path::Path, command: DataCommand, quiet: bool) -> anyhow::Result<i32> {
    match command {
        DataCommand::Fetch { which, from } => {
            ops::data::fetch(data_dir, &which.concat(), from.as_deref(), &mut |line| {
                if !quiet {
                    out(line)
                }
            })?;
            Ok(0)
        }
        DataCommand::Status => {
            let (text, all) = ops::data::status(data_dir);
            out(&text);
            Ok(if all { 0 } else { 1 })
        }
    }
}

/// `wfpipe cache ...`.
fn cache_command(cache: &std::path::Path, command: CacheCommand) -> anyhow::Result<i32> {
    let c = ops::open_cache(cache)?;
    match command {
        CacheCommand::Ls { format: OutputFormat::Text } => out(&ops::cache_cmd::ls(&c)?),
        CacheCommand::Ls { format: OutputFormat::Json } => out(&ops::cache_cmd::ls_json(&c)?),
        CacheCommand::Du => out(&ops::cache_cmd::du(&c)?),
        CacheCommand::Verify { dry_run } => {
            let (text, clean) = ops::cache_cmd::verify_cmd(&c, dry_run)?;
            out(&text);
            return Ok(if clean { 0 } else { 1 });
        }
        CacheCommand::Gc { pipelines, max_size, apply } => out(&ops::cache_cmd::gc_cmd(&c, &pipelines, &[], max_size, apply)?),
    }
    Ok(0)
}

/// Print a command's output; a closed pipe (`wfpipe plan ... | head`) ends it quietly.
fn out(text: &str) {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => panic!("cannot write to stdout: {e}"),
        Ok(()) => {}
    }
}

/// A count that must be at least `MIN` (`--jobs 0` would run nothing, forever).
fn at_least<const MIN: usize>(text: &str) -> Result<usize, String> {
    let n: usize = text.parse().map_err(|e| format!("`{text}` is not a count: {e}"))?;
    if n < MIN {
        return Err(format!("must be at least {MIN}"));
    }
    Ok(n)
}
