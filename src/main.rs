//! The `cpvault` binary: parses the command line, sets up logging, runs one command and maps
//! its outcome to an exit code (0 ok, 1 error, 2 usage, 3 verification failed, 4 a health
//! check failed; a closed
//! stdout pipe is 0). It must never panic at the user or print a backtrace.

use std::process::ExitCode;

use clap::Parser;
use cpvault::cli::{Cli, OutputFormat};
use cpvault::commands::{self, Ctx};
use cpvault::config::Config;
use cpvault::error::{HealthCheckFailed, StdoutClosed, Usage, VerifyFailed};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CPVAULT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("cpvault={level},cpvault_backends={level},warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();

    let result = Config::load(cli.config.as_deref())
        .map_err(anyhow::Error::from)
        .and_then(|config| {
            let output = cli.output.unwrap_or(match config.output.as_deref() {
                Some("json") => OutputFormat::Json,
                _ => OutputFormat::Text,
            });
            let ctx = Ctx {
                config,
                output,
                quiet: cli.quiet,
                config_path: cli.config.clone(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(commands::run(ctx, cli.command))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            cpvault::say!("error: {}", one_line(&e));
            ExitCode::from(if e.is::<Usage>() {
                2
            } else if e.is::<VerifyFailed>() {
                3
            } else if e.is::<HealthCheckFailed>() {
                4
            } else {
                1
            })
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !line.contains(&c) {
            line.push_str(": ");
            line.push_str(&c);
        }
    }
    line.replace('\n', " ")
}
