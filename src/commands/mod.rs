//! The commands: each gathers its inputs (flags over variables over the config file), calls
//! the core, and renders text or JSON. None holds format or pipeline logic of its own.

pub mod backup;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod extract;
pub mod get;
pub mod inspect;
pub mod keygen;
pub mod list;
pub mod prune;
pub mod restore;
pub mod run;
pub mod show;
pub mod status;
pub mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use cpvault_backends::Store;

use crate::cli::{
    Command, IdentityArgs, MetricsArgs, OutputFormat, SigningArgs, StoreArgs, TrustArgs,
};
use crate::config::Config;
use crate::crypto::{self, Identities};
use crate::error::Usage;
use crate::trust::{AllowedSigners, SigningKey};

/// What every command gets.
pub struct Ctx {
    /// The config file's content.
    pub config: Config,
    /// Output format.
    pub output: OutputFormat,
    /// No progress or summaries.
    pub quiet: bool,
    /// The config file given with `--config` (or CPVAULT_CONFIG), for child processes.
    pub config_path: Option<PathBuf>,
}

impl Ctx {
    /// Whether JSON is wanted.
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// Opens the store from the flag or the config.
    ///
    /// # Errors
    /// [`Usage`] without a store; the store's error otherwise.
    pub fn store(&self, args: &StoreArgs, create: bool) -> anyhow::Result<Store> {
        let url = args.store.clone().or_else(|| self.config.store.clone()).ok_or_else(|| {
            Usage("no store given: pass --store URL (a directory or file:///path), set CPVAULT_STORE, or put `store = …` in the config file".into())
        })?;
        Ok(Store::open_with(&url, create, &self.config.store_settings)?)
    }

    /// Loads identities from `-i`, the config and CPVAULT_PASSPHRASE; `None` when there are
    /// none.
    ///
    /// # Errors
    /// A key file that cannot be used.
    pub fn identities(&self, args: &IdentityArgs) -> anyhow::Result<Option<Arc<Identities>>> {
        let files: Vec<PathBuf> = if args.identities.is_empty() {
            self.config.identities.clone()
        } else {
            args.identities.clone()
        };
        let ids = crypto::identities(&files, crypto::passphrase_from_env())?;
        Ok((!ids.is_empty()).then(|| Arc::new(ids)))
    }
}

impl Ctx {
    /// The signing key from `--signing-key`, CPVAULT_SIGNING_KEY or the config; `None`
    /// when none is set.
    ///
    /// # Errors
    /// [`Usage`] when the key cannot be used (unreadable, encrypted, not ed25519).
    pub fn signing_key(&self, args: &SigningArgs) -> anyhow::Result<Option<SigningKey>> {
        let Some(path) = args
            .signing_key
            .as_ref()
            .or(self.config.signing_key.as_ref())
        else {
            return Ok(None);
        };
        SigningKey::load(path)
            .map(Some)
            .map_err(|e| Usage(format!("--signing-key {e}")).into())
    }

    /// The allowed signers from `--allowed-signers`, CPVAULT_ALLOWED_SIGNERS or the config;
    /// `None` when none is set.
    ///
    /// # Errors
    /// [`Usage`] when the file cannot be read or parsed.
    pub fn allowed_signers(&self, args: &TrustArgs) -> anyhow::Result<Option<AllowedSigners>> {
        let Some(path) = args
            .allowed_signers
            .as_ref()
            .or(self.config.allowed_signers.as_ref())
        else {
            return Ok(None);
        };
        AllowedSigners::load(path)
            .map(Some)
            .map_err(|e| Usage(format!("--allowed-signers {e}")).into())
    }
}

impl Ctx {
    /// Where metrics go: flags over the config file.
    pub fn metrics_sinks(&self, args: &MetricsArgs) -> crate::metrics::Sinks {
        crate::metrics::Sinks {
            file: args
                .metrics_file
                .clone()
                .or_else(|| self.config.metrics_file.clone()),
            pushgateway: args
                .pushgateway
                .clone()
                .or_else(|| self.config.pushgateway.clone()),
        }
    }
}

/// Records `runs` in the configured sinks and folds the command's own `result` with the
/// metrics' outcome: the command's error wins; a metrics failure after a successful run is
/// an error too, so a scheduler notices that its monitoring went blind.
///
/// # Errors
/// The command's error, else the metrics error.
pub async fn finish_with_metrics(
    sinks: &crate::metrics::Sinks,
    runs: &[crate::metrics::Run],
    result: anyhow::Result<()>,
) -> anyhow::Result<()> {
    if !sinks.any() || runs.is_empty() {
        return result;
    }
    match (crate::metrics::record(sinks, runs).await, result) {
        (_, Err(e)) => Err(e),
        (Err(m), Ok(())) => Err(m.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Shows a failed verification report (JSON on stdout, or text on stderr) and returns the
/// exit-3 error with `message`.
pub fn verify_failed(ctx: &Ctx, report: &crate::verify::Report, message: String) -> anyhow::Error {
    if ctx.json() {
        if let Err(e) = print_json(report) {
            return e;
        }
    } else {
        crate::say_raw!("{}", report.render());
    }
    crate::error::VerifyFailed(message).into()
}

/// Says on stderr that a backup's author was not checked (no allowed signers configured).
pub fn note_authorship(ctx: &Ctx, backup: &str, who: &crate::trust::Authorship) {
    if !ctx.quiet && matches!(who, crate::trust::Authorship::NotChecked { .. }) {
        crate::say!("note: {backup}: {}", who.describe());
    }
}

/// Writes `value` as pretty JSON on stdout.
///
/// # Errors
/// A write error (a closed pipe is handled by the caller).
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    // Straight into stdout: a fleet's listing is tens of megabytes of JSON, never held whole.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(|e| match e.io_error_kind() {
            Some(kind) => std::io::Error::from(kind),
            None => std::io::Error::other(e),
        })
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(crate::error::StdoutClosed.into())
        }
        r => Ok(r?),
    }
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    print_bytes(text.as_bytes())
}

/// Writes bytes on stdout as they are.
///
/// # Errors
/// A write error (a closed pipe is handled by the caller).
pub fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(crate::error::StdoutClosed.into())
        }
        r => Ok(r?),
    }
}

/// Writes text on stdout.
///
/// # Errors
/// A write error.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    if text.ends_with('\n') {
        write_stdout(text)
    } else {
        write_stdout(&format!("{text}\n"))
    }
}

/// Runs `command`.
///
/// # Errors
/// Whatever the command reports; [`Usage`] and [`crate::error::VerifyFailed`] choose the
/// exit code.
pub async fn run(ctx: Ctx, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keygen(a) => keygen::run(&ctx, a),
        Command::Backup(a) => backup::run(&ctx, *a).await,
        Command::List(a) => list::run(&ctx, a).await,
        Command::Show(a) => show::run(&ctx, a).await,
        Command::Verify(a) => verify::run(&ctx, a).await,
        Command::Extract(a) => extract::run(&ctx, a).await,
        Command::Inspect(a) => inspect::run(&ctx, a).await,
        Command::Diff(a) => diff::run(&ctx, a).await,
        Command::Get(a) => get::run(&ctx, a).await,
        Command::Prune(a) => prune::run(&ctx, a).await,
        Command::Restore(a) => restore::run(&ctx, *a).await,
        Command::Copy(a) => copy::run(&ctx, a).await,
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Drill(a) => drill::run(&ctx, *a).await,
        Command::Run(a) => run::run(&ctx, *a).await,
        Command::Completions(a) => {
            let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut cmd, "cpvault", &mut out);
            print_text(&String::from_utf8_lossy(&out))
        }
        Command::Man => {
            let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            print_text(&String::from_utf8_lossy(&out))
        }
    }
}
