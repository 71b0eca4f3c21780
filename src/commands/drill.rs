//! `cpvault drill`: runs `crate::drill` on one backup (or the newest of each cluster), stores
//! the record beside the backup (signed with a signing key), renders it, records metrics, and
//! exits 3 when a drill failed.

use std::fmt::Write as _;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use cpvault_backends::Store;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::cli::DrillArgs;
use crate::drill::{drill_key, Record, DRILL_SIGNATURE_SUFFIX};
use crate::error::{Usage, VerifyFailed};
use crate::trust::{AllowedSigners, Authorship, SigningKey};

/// Runs the command.
///
/// # Errors
/// [`VerifyFailed`] (exit 3) when a drill failed; usage errors; a drill that could not run.
pub async fn run(ctx: &Ctx, args: DrillArgs) -> anyhow::Result<()> {
    if let Some(r) = &args.reference {
        crate::catalog::parse_ref(r)?;
    } else if args.cluster.is_none() && !args.all && ctx.config.cluster.is_none() {
        return Err(Usage("drill --latest needs --cluster NAME or --all".into()).into());
    }
    let store = ctx.store(&args.store, false)?;
    let identities = ctx.identities(&args.identity)?.ok_or_else(|| {
        Usage("drill needs a key: pass -i IDENTITY_FILE (or set CPVAULT_PASSPHRASE)".into())
    })?;
    let signers = ctx.allowed_signers(&args.trust)?;
    let signing = ctx.signing_key(&args.signing)?;
    let sinks = ctx.metrics_sinks(&args.metrics);
    let targets = targets(ctx, &args, &store, signers.as_ref()).await?;
    let mut runs = vec![];
    let mut records = vec![];
    let mut failed = 0;
    let mut text = String::new();
    for (m, who) in targets {
        let started = SystemTime::now();
        let clock = Instant::now();
        let outcome = drill_one(ctx, &store, &m, &who, identities.clone(), signing.as_ref()).await;
        let ok = matches!(&outcome, Ok(r) if r.ok);
        runs.push(crate::metrics::Run::ended(
            m.cluster.clone(),
            "drill",
            started,
            clock,
            ok,
        ));
        match outcome {
            Ok(r) => {
                if !r.ok {
                    failed += 1;
                }
                render(&mut text, &r);
                records.push(serde_json::to_value(&r)?);
            }
            Err(e) => {
                failed += 1;
                let msg = format!("{e:#}");
                let _ = writeln!(text, "FAILED  {}: {msg}", m.reference());
                records
                    .push(serde_json::json!({"backup": m.reference(), "ok": false, "error": msg}));
            }
        }
    }
    let result = if failed > 0 {
        Err(VerifyFailed(format!("{failed} of {} drills failed", records.len())).into())
    } else {
        Ok(())
    };
    if ctx.json() {
        super::print_json(&records)?;
    } else {
        super::print_text(&text)?;
    }
    super::finish_with_metrics(&sinks, &runs, result).await
}

async fn targets(
    ctx: &Ctx,
    args: &DrillArgs,
    store: &Store,
    signers: Option<&AllowedSigners>,
) -> anyhow::Result<Vec<(Manifest, Authorship)>> {
    if let Some(r) = &args.reference {
        return Ok(vec![crate::catalog::resolve_with(store, r, signers).await?]);
    }
    let cluster = args.cluster.clone().or_else(|| ctx.config.cluster.clone());
    let cluster = if args.all { None } else { cluster };
    let mut cat = crate::catalog::load_with(store, cluster.as_deref(), signers).await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = vec![];
    for m in cat.backups {
        if seen.insert(m.cluster.clone()) {
            let who = cat
                .authorship
                .remove(&m.reference())
                .unwrap_or(Authorship::NotChecked { signed: false });
            out.push((m, who));
        }
    }
    if out.is_empty() {
        anyhow::bail!("no backup to drill in {store}");
    }
    Ok(out)
}

/// Drills one backup and stores its record (the drill's verdict stands even when storing
/// the record fails; that failure is reported as the error).
pub async fn drill_one(
    ctx: &Ctx,
    store: &Store,
    m: &Manifest,
    who: &Authorship,
    identities: std::sync::Arc<crate::crypto::Identities>,
    signing: Option<&SigningKey>,
) -> anyhow::Result<Record> {
    super::note_authorship(ctx, &m.reference(), who);
    let record = crate::drill::drill(store, m, who, identities, ctx.quiet).await?;
    let json = Bytes::from(serde_json::to_vec_pretty(&record)?);
    if let Some(k) = signing {
        let sig = crate::commit::sign(k, &m.reference(), &json)?;
        let key = format!("{}/{}{DRILL_SIGNATURE_SUFFIX}", m.cluster, m.id);
        store.put_overwrite(&key, sig).await?;
    }
    store
        .put_overwrite(&drill_key(&m.cluster, &m.id), json)
        .await?;
    Ok(record)
}

fn render(t: &mut String, r: &Record) {
    let _ = writeln!(
        t,
        "{}  {} (drill)",
        if r.ok { "OK    " } else { "FAILED" },
        r.backup
    );
    for c in &r.checks {
        let _ = writeln!(
            t,
            "  {:13} {:8} {}",
            c.name,
            if c.ok { "ok" } else { "FAILED" },
            crate::text::escape_for_line(&c.detail, 1000)
        );
    }
    for c in r.certificates.iter().take(5) {
        let _ = writeln!(
            t,
            "  expires       {}  {} ({} days)",
            c.not_after.format("%Y-%m-%d"),
            c.path,
            c.days_left
        );
    }
}
