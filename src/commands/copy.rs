//! `cpvault copy`: replicates committed backups to another store, the way backup commits
//! them. The archive streams from one store to the other with its sha256 and size checked on
//! the way; only when they match the source manifest is the upload completed, and then the
//! manifest, copied byte for byte, is created last (create-if-absent). A backup already at
//! the target with the same manifest is skipped; a different one under the same name is an
//! error, never overwritten. Signatures travel with their backups; with allowed signers,
//! untrusted backups are not copied.

use futures::StreamExt;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::archive::{archive_key, manifest_key};
use crate::cli::CopyArgs;
use crate::commit::{self, CommitError, Uploaded};
use crate::error::Usage;
use crate::trust::{signature_key, SigningKey};
use cpvault_backends::{Store, StoreError};

/// What happened to one backup.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    backup: String,
    /// `copied`, `skipped` (already there, identical) or `failed`.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    bytes: u64,
}

/// Runs the command.
///
/// # Errors
/// Usage errors, an unreadable source, or (after trying every backup) any that failed.
pub async fn run(ctx: &Ctx, args: CopyArgs) -> anyhow::Result<()> {
    if args.references.is_empty() && !args.all {
        return Err(Usage(
            "copy needs backups: give REF… (<cluster>/<id> or <cluster>/latest) or --all".into(),
        )
        .into());
    }
    for r in &args.references {
        crate::catalog::parse_ref(r)?;
    }
    let signers = ctx.allowed_signers(&args.trust)?;
    let signing = ctx.signing_key(&args.signing)?;
    let from = ctx.store(&args.store, false)?;
    let to = Store::open_with(&args.to, true, &ctx.config.store_settings)
        .map_err(|e| Usage(format!("--to: {e}")))?;
    if from.to_string() == to.to_string() {
        return Err(Usage(format!(
            "--to is the source store ({from}); copy to another store"
        ))
        .into());
    }
    let mut backups: Vec<Manifest> = vec![];
    let mut untrusted: Vec<(Manifest, String)> = vec![];
    if args.all {
        let cat =
            crate::catalog::load_with(&from, args.cluster.as_deref(), signers.as_ref()).await?;
        backups.extend(cat.backups.into_iter().rev()); // oldest first: the target fills in order
        untrusted = cat.untrusted;
    }
    for r in &args.references {
        match crate::catalog::resolve_with(&from, r, signers.as_ref()).await? {
            (m, crate::trust::Authorship::Untrusted { reason }) => untrusted.push((m, reason)),
            (m, _) => backups.push(m),
        }
    }
    if backups.is_empty() && untrusted.is_empty() {
        anyhow::bail!("no committed backups to copy in {from}");
    }
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let mut outcomes = vec![];
    for (m, reason) in untrusted {
        if !ctx.quiet && !ctx.json() {
            crate::say!("FAILED   {}: not copied: {reason}", m.reference());
        }
        outcomes.push(Outcome {
            backup: m.reference(),
            action: "failed",
            error: Some(format!("not copied: {reason}")),
            bytes: 0,
        });
    }
    let mut copied_to = std::collections::BTreeSet::new();
    for m in &backups {
        let reference = m.reference();
        let r = copy_one(ctx, &from, &to, m, signing.as_ref()).await;
        let (action, error, bytes) = match r {
            Ok((action, bytes)) => (action, None, bytes),
            Err(e) => ("failed", Some(format!("{e:#}")), 0),
        };
        if action == "copied" {
            copied_to.insert(m.cluster.as_str());
        }
        if !ctx.quiet && !ctx.json() {
            match &error {
                None => crate::say!(
                    "{action:<8} {reference} ({})",
                    crate::progress::human(bytes)
                ),
                Some(e) => crate::say!("FAILED   {reference}: {e}"),
            }
        }
        outcomes.push(Outcome {
            backup: reference,
            action,
            error,
            bytes,
        });
    }
    crate::catalog::cache::refresh_clusters(&to, copied_to).await;
    let failed = outcomes.iter().filter(|o| o.action == "failed").count();
    let mut per_cluster: std::collections::BTreeMap<String, bool> = Default::default();
    for o in &outcomes {
        let cluster = o.backup.split('/').next().unwrap_or_default().to_string();
        *per_cluster.entry(cluster).or_insert(true) &= o.action != "failed";
    }
    let runs: Vec<crate::metrics::Run> = per_cluster
        .into_iter()
        .map(|(cluster, ok)| crate::metrics::Run::ended(cluster, "copy", started, clock, ok))
        .collect();
    let result = summarize(ctx, &outcomes, failed, &to);
    super::finish_with_metrics(&ctx.metrics_sinks(&args.metrics), &runs, result).await
}

fn summarize(ctx: &Ctx, outcomes: &[Outcome], failed: usize, to: &Store) -> anyhow::Result<()> {
    if ctx.json() {
        super::print_json(&outcomes)?;
    } else {
        let copied = outcomes.iter().filter(|o| o.action == "copied").count();
        let skipped = outcomes.iter().filter(|o| o.action == "skipped").count();
        super::print_text(&format!(
            "{copied} copied, {skipped} already there, {failed} failed → {to}"
        ))?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} backups were not copied to {to}",
            outcomes.len()
        );
    }
    Ok(())
}

async fn copy_one(
    ctx: &Ctx,
    from: &Store,
    to: &Store,
    m: &Manifest,
    signing: Option<&SigningKey>,
) -> anyhow::Result<(&'static str, u64)> {
    let archive = m
        .archive
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the manifest has no archive section"))?;
    let mkey = manifest_key(&m.cluster, &m.id);
    let akey = archive_key(&m.cluster, &m.id);
    let skey = signature_key(&m.cluster, &m.id);
    // The bytes copied must be the manifest that was judged (a store written to meanwhile
    // could hold another), and are read bounded like every manifest.
    let manifest_bytes =
        crate::catalog::read_small(from, &mkey, crate::catalog::MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| anyhow::anyhow!("{mkey} in {from}: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("{mkey} vanished from {from}"))?;
    if crate::archive::manifest::parse_manifest(&manifest_bytes)
        .ok()
        .as_ref()
        != Some(m)
    {
        anyhow::bail!("{mkey} in {from} changed since it was judged; nothing was copied");
    }
    match to.get_bytes(&mkey).await {
        Ok(existing) if existing == manifest_bytes => {
            // Committed there; the archive must be there too, the same size.
            let head = to.head(&akey).await?;
            if head.size == archive.size {
                return Ok(("skipped", 0));
            }
            anyhow::bail!(
                "{to} has this backup's manifest but its archive is {} bytes, not {}; verify it there",
                head.size,
                archive.size
            );
        }
        Ok(_) => anyhow::bail!(
            "{to} already has a different backup named {}; nothing was overwritten",
            m.reference()
        ),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // The signature travels with its backup; one is made only for a backup that has none.
    let signature = match crate::catalog::read_signature(from, &skey).await {
        Ok(Some(sig)) => Some(sig),
        Ok(None) => match signing {
            Some(k) => Some(crate::commit::sign(k, &m.reference(), &manifest_bytes)?),
            None => None,
        },
        Err(reason) => anyhow::bail!("{skey} in {from}: {reason}; not copied"),
    };
    let (size, stream) = from.get_large(&akey).await?;
    let bar = crate::progress::bytes(
        ctx.quiet || ctx.json(),
        size,
        &format!("copy {}", m.reference()),
    );
    let chunks = stream
        .inspect(|c| {
            if let Ok(c) = c {
                bar.inc(c.len() as u64);
            }
        })
        .map(|c| c.map(Some))
        .chain(futures::stream::once(async { Ok(None) }));
    let want = Uploaded {
        size: archive.size,
        sha256: archive.sha256.clone(),
    };
    let uploaded = commit::upload(to, &akey, chunks, Some(&want), std::future::pending()).await;
    bar.finish_and_clear();
    let n = match uploaded {
        Ok(u) => u.size,
        Err(CommitError::Archive(e)) => {
            anyhow::bail!("{e}; nothing was committed to {to} — run verify on {from}")
        }
        Err(e) => {
            return Err(anyhow::Error::from(e)
                .context(format!("copying {akey}; nothing was committed to {to}")))
        }
    };
    match commit::commit_manifest(to, &m.cluster, &m.id, manifest_bytes.clone(), signature).await {
        Ok(()) => Ok(("copied", n)),
        // Another copy committed it meanwhile: fine if it is this very backup (the archive
        // we wrote is then byte-identical), an error otherwise.
        Err(StoreError::AlreadyExists { .. }) => {
            if to.get_bytes(&mkey).await? == manifest_bytes {
                Ok(("skipped", 0))
            } else {
                anyhow::bail!(
                    "{to} got a different backup named {} while this copy ran; its archive may have been replaced — verify it there",
                    m.reference()
                )
            }
        }
        Err(e) => Err(e.into()),
    }
}
