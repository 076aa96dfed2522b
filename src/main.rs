use clap::Parser;
use tracing_subscriber::EnvFilter;
use wfpipe::cli::{self, Cli, LogFormat};
use wfpipe::pipeline::LoadError;

// Small tensors allocate and free constantly; a caching allocator halves that cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        _ if cli.quiet => "error",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let is_exec_stage = matches!(cli.command, cli::Command::ExecStage { .. } | cli::Command::SlurmWorker { .. });
    // exec-stage logs into its instance's log file, so it always logs at info level.
    let filter = EnvFilter::try_from_env("WFPIPE_LOG").unwrap_or_else(|_| EnvFilter::new(if is_exec_stage { "info" } else { level }));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.with_ansi(!is_exec_stage && std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
    let code = match cli::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<LoadError>() {
                Some(LoadError::Invalid(diag)) => eprint!("{diag}"),
                _ => {
                    eprintln!("error: {e}");
                    for cause in e.chain().skip(1) {
                        eprintln!("  caused by: {cause}");
                    }
                }
            }
            2
        }
    };
    std::process::exit(code);
}
