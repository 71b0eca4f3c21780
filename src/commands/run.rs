//! `cpvault run`: the one command a scheduler runs. It backs up every configured cluster,
//! prunes by the configured policies, and drills each cluster whose last drill is older than
//! the cadence, each step as its own `cpvault` process with the same settings (so each step
//! records its own metrics, and one step's crash cannot take the others with it), then
//! exits non-zero when any step failed.

use std::process::Command;

use super::Ctx;
use crate::cli::RunArgs;
use crate::error::Usage;

/// The default drill cadence.
const DEFAULT_DRILL_EVERY: &str = "7d";

/// Runs the command.
///
/// # Errors
/// [`Usage`] without configured clusters; an error naming the failed steps otherwise.
pub async fn run(ctx: &Ctx, args: RunArgs) -> anyhow::Result<()> {
    if ctx.config.clusters.is_empty() {
        return Err(Usage(
            "run works through the [clusters.NAME] sections of the config file, and it has none; see `cpvault backup --help`".into(),
        )
        .into());
    }
    // The backups this run makes create a local store's directory anyway.
    let store = ctx.store(&args.store, true)?;
    let me = std::env::current_exe()?;
    let mut env: Vec<(&str, String)> = vec![("CPVAULT_STORE", store.to_string())];
    if let Some(c) = &ctx.config_path {
        env.push(("CPVAULT_CONFIG", c.display().to_string()));
    }
    let sinks = ctx.metrics_sinks(&args.metrics);
    if let Some(f) = &sinks.file {
        env.push(("CPVAULT_METRICS_FILE", f.display().to_string()));
    }
    if let Some(u) = &sinks.pushgateway {
        env.push(("CPVAULT_PUSHGATEWAY", u.clone()));
    }
    let signing = args
        .signing
        .signing_key
        .clone()
        .or(ctx.config.signing_key.clone());
    if let Some(k) = signing {
        env.push(("CPVAULT_SIGNING_KEY", k.display().to_string()));
    }
    let signers_file = args
        .trust
        .allowed_signers
        .clone()
        .or(ctx.config.allowed_signers.clone());
    if let Some(f) = &signers_file {
        env.push(("CPVAULT_ALLOWED_SIGNERS", f.display().to_string()));
    }
    let identities = if args.identity.identities.is_empty() {
        ctx.config.identities.clone()
    } else {
        args.identity.identities.clone()
    };
    if !identities.is_empty() {
        let joined: Vec<String> = identities.iter().map(|p| p.display().to_string()).collect();
        env.push(("CPVAULT_IDENTITY", joined.join(",")));
    }
    let step = |what: &str, argv: &[&str]| -> bool {
        if !ctx.quiet {
            crate::say!("== cpvault {}", argv.join(" "));
        }
        let mut cmd = Command::new(&me);
        cmd.args(argv)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        if ctx.quiet {
            cmd.arg("--quiet");
        }
        match cmd.status() {
            Ok(s) if s.success() => true,
            Ok(s) => {
                crate::say!("run: {what} failed ({s})");
                false
            }
            Err(e) => {
                crate::say!("run: {what} could not start: {e}");
                false
            }
        }
    };
    let mut failed = vec![];
    if !step("backup", &["backup", "--all"]) {
        failed.push("backup".to_string());
    }
    if !step("prune", &["prune"]) {
        failed.push("prune".to_string());
    }
    if identities.is_empty() && crate::crypto::passphrase_from_env().is_none() {
        crate::say!("run: no identity (-i or config identities), so no drill; status will show drills as never run");
    } else {
        let every = args
            .drill_every
            .or(ctx.config.drill_every)
            .unwrap_or_else(|| DEFAULT_DRILL_EVERY.parse().expect("valid default"));
        let now = chrono::Utc::now();
        let due_before = every
            .before(now, chrono_tz::UTC)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let signers = ctx.allowed_signers(&args.trust)?;
        let names: Vec<String> = ctx.config.clusters.keys().cloned().collect();
        // What to drill is a decision: made from the manifests, not the listing caches.
        let statuses =
            crate::status::gather(&store, &names, false, signers.as_ref(), now, false).await?;
        for s in statuses.iter().filter(|s| s.newest.is_some()) {
            let due = s
                .last_drill
                .as_ref()
                .is_none_or(|d| d.drilled_at < due_before);
            if due && !step("drill", &["drill", "--latest", "--cluster", &s.cluster]) {
                failed.push(format!("drill of {}", s.cluster));
            }
        }
    }
    if failed.is_empty() {
        if !ctx.quiet {
            crate::say!("run: every step succeeded");
        }
        return Ok(());
    }
    anyhow::bail!(
        "run: {} failed (details above and in the metrics)",
        failed.join(", ")
    )
}
