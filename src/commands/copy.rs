//! `cpvault copy`: replicates committed backups to another store, the way backup commits
//! them. The archive streams from one store to the other with its sha256 and size checked on
//! the way; only when they match the source manifest is the upload completed, and then the
//! manifest, copied byte for byte, is created last (create-if-absent). A backup already at
//! the target with the same manifest is skipped; a different one under the same name is an
//! error, never overwritten.

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::archive::{archive_key, manifest_key};
use crate::cli::CopyArgs;
use crate::error::Usage;
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
    if args.all {
        let cat = crate::catalog::load(&from, args.cluster.as_deref()).await?;
        backups.extend(cat.backups.into_iter().rev()); // oldest first: the target fills in order
    }
    for r in &args.references {
        backups.push(crate::catalog::resolve(&from, r).await?);
    }
    if backups.is_empty() {
        anyhow::bail!("no committed backups to copy in {from}");
    }
    let mut outcomes = vec![];
    for m in &backups {
        let reference = m.reference();
        let r = copy_one(ctx, &from, &to, m).await;
        let (action, error, bytes) = match r {
            Ok((action, bytes)) => (action, None, bytes),
            Err(e) => ("failed", Some(format!("{e:#}")), 0),
        };
        if !ctx.quiet && !ctx.json() {
            match &error {
                None => eprintln!(
                    "{action:<8} {reference} ({})",
                    crate::progress::human(bytes)
                ),
                Some(e) => eprintln!("FAILED   {reference}: {e}"),
            }
        }
        outcomes.push(Outcome {
            backup: reference,
            action,
            error,
            bytes,
        });
    }
    let failed = outcomes.iter().filter(|o| o.action == "failed").count();
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
) -> anyhow::Result<(&'static str, u64)> {
    let archive = m
        .archive
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the manifest has no archive section"))?;
    let mkey = manifest_key(&m.cluster, &m.id);
    let akey = archive_key(&m.cluster, &m.id);
    let manifest_bytes = from.get_bytes(&mkey).await?;
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
    let (size, mut stream) = from.get_stream(&akey).await?;
    let bar = crate::progress::bytes(
        ctx.quiet || ctx.json(),
        size,
        &format!("copy {}", m.reference()),
    );
    let mut upload = to.start_upload(&akey).await?;
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let streamed: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            n += chunk.len() as u64;
            bar.inc(chunk.len() as u64);
            upload.write(chunk).await?;
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    let digest = hex::encode(hasher.finalize());
    let mismatch = (n != archive.size || digest != archive.sha256).then(|| {
        format!(
            "the archive read from {from} is {n} bytes with sha256 {digest}, but its manifest says {} bytes with sha256 {}; nothing was committed to {to} — run verify on {from}",
            archive.size, archive.sha256
        )
    });
    if let Err(e) = streamed {
        upload.abort().await;
        return Err(e.context(format!("copying {akey}; nothing was committed to {to}")));
    }
    if let Some(msg) = mismatch {
        upload.abort().await;
        anyhow::bail!(msg);
    }
    upload.finish().await?;
    match to.put_create(&mkey, manifest_bytes.clone()).await {
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
