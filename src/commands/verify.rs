//! `cpvault verify`: checks backups without a key (ciphertext size and sha256) or with one
//! (every layer), prints a verdict per backup, and exits 3 when any check failed.

use std::fmt::Write as _;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::archive::reader::NullSink;
use crate::catalog::ResolveError;
use crate::cli::VerifyArgs;
use crate::error::VerifyFailed;
use crate::trust::Authorship;

/// Runs the command.
///
/// # Errors
/// [`VerifyFailed`] when any backup fails; other errors for a bad store, reference or key.
pub async fn run(ctx: &Ctx, args: VerifyArgs) -> anyhow::Result<()> {
    if args.references.is_empty() && !args.all && !args.latest {
        return Err(crate::error::Usage(
            "verify needs backups to check: give REF… (<cluster>/<id> or <cluster>/latest), --latest or --all".into(),
        )
        .into());
    }
    for r in &args.references {
        crate::catalog::parse_ref(r)?;
    }
    let store = ctx.store(&args.store, false)?;
    let identities = ctx.identities(&args.identity)?;
    // With no identity file, CPVAULT_PASSPHRASE alone can only open passphrase archives;
    // the others are verified without a key rather than failed at decrypt.
    let key_files = !args.identity.identities.is_empty() || !ctx.config.identities.is_empty();
    let signers = ctx.allowed_signers(&args.trust)?;
    let mut targets: Vec<Result<(Manifest, Authorship), String>> = vec![];
    if args.all || args.latest {
        let mut cat =
            crate::catalog::load_with(&store, args.cluster.as_deref(), signers.as_ref()).await?;
        for (key, why) in cat.unreadable {
            targets.push(Err(format!("{key}: manifest unreadable: {why}")));
        }
        // --all checks the untrusted ones too (they fail); --latest is the newest trusted.
        if args.all {
            for (m, reason) in std::mem::take(&mut cat.untrusted) {
                targets.push(Ok((m, Authorship::Untrusted { reason })));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in cat.backups {
            if !args.latest || seen.insert(m.cluster.clone()) {
                let who = cat
                    .authorship
                    .remove(&m.reference())
                    .unwrap_or(Authorship::NotChecked { signed: false });
                targets.push(Ok((m, who)));
            }
        }
        if targets.is_empty() {
            anyhow::bail!("no committed backups to verify in {store}");
        }
    } else {
        for r in &args.references {
            match crate::catalog::resolve_with(&store, r, signers.as_ref()).await {
                Ok(found) => targets.push(Ok(found)),
                Err(e) if e.is::<VerifyFailed>() || e.is::<ResolveError>() => {
                    targets.push(Err(e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
    }

    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let mut per_cluster: std::collections::BTreeMap<String, bool> = Default::default();
    let mut reports = vec![];
    let mut failed = 0;
    let mut text = String::new();
    for t in targets {
        let (m, who) = match t {
            Ok(found) => found,
            Err(msg) => {
                failed += 1;
                writeln!(text, "FAILED  {msg}")?;
                reports.push(serde_json::json!({"backup": null, "ok": false, "error": msg}));
                continue;
            }
        };
        let bar = crate::progress::bytes(ctx.quiet, 0, &format!("verify {}", m.reference()));
        let passphrase_archive = m
            .archive
            .as_ref()
            .is_some_and(|a| a.recipients.iter().any(|r| r == "scrypt"));
        let ids = if key_files || passphrase_archive {
            identities.clone()
        } else {
            None
        };
        super::note_authorship(ctx, &m.reference(), &who);
        let report =
            crate::verify::verify(&store, &m, &who, ids, Box::new(NullSink), bar.clone()).await;
        bar.finish_and_clear();
        if !report.ok {
            failed += 1;
        }
        *per_cluster.entry(m.cluster.clone()).or_insert(true) &= report.ok;
        text.push_str(&report.render());
        reports.push(serde_json::to_value(&report)?);
    }
    if ctx.json() {
        super::print_json(&reports)?;
    } else {
        super::print_text(&text)?;
    }
    let result = if failed > 0 {
        Err(VerifyFailed(format!(
            "{failed} of {} backups failed verification",
            reports.len()
        ))
        .into())
    } else {
        Ok(())
    };
    let runs: Vec<crate::metrics::Run> = per_cluster
        .into_iter()
        .map(|(cluster, ok)| crate::metrics::Run::ended(cluster, "verify", started, clock, ok))
        .collect();
    super::finish_with_metrics(&ctx.metrics_sinks(&args.metrics), &runs, result).await
}
