//! `cpvault backup`: gathers sources, recipients and metadata, runs the archive writer, and
//! prints the new `<cluster>/<id>` (or the outer manifest as JSON).

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use cpvault_backends::UploadOptions;

use super::Ctx;
use crate::archive::writer::{write_backup, BackupMeta, WriteOptions};
use crate::archive::{is_valid_cluster, new_id};
use crate::cli::BackupArgs;
use crate::error::Usage;
use crate::sources::{local, SourceEntry};

/// Runs the command.
///
/// # Errors
/// Bad input ([`Usage`]), unreadable sources or keys, or a failed upload; nothing is
/// committed on error.
pub async fn run(ctx: &Ctx, args: BackupArgs) -> anyhow::Result<()> {
    let cfg = &ctx.config;
    let cluster = args
        .cluster
        .clone()
        .or_else(|| cfg.cluster.clone())
        .ok_or_else(|| {
            Usage(
                "no cluster name: pass --cluster NAME (backups are stored as <cluster>/<id>)"
                    .into(),
            )
        })?;
    if !is_valid_cluster(&cluster) {
        return Err(Usage(format!(
            "cluster name '{cluster}' is not valid: use 1–63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
        .into());
    }
    let tags = parse_tags(&args.tags, &cfg.tags)?;
    let (entries, source) = gather_sources(ctx, &args)?;

    let mut recipients = args.recipients.clone();
    if recipients.is_empty() && args.recipients_files.is_empty() {
        recipients = cfg.recipients.clone();
    }
    let files = if args.recipients_files.is_empty() && args.recipients.is_empty() {
        cfg.recipients_files.clone()
    } else {
        args.recipients_files.clone()
    };
    let recipients =
        crate::crypto::recipients(&recipients, &files, crate::crypto::passphrase_from_env())?;

    let store = ctx
        .store(&args.store, true)?
        .with_upload_options(UploadOptions {
            part_size: (args.part_size_mib * 1024 * 1024) as usize,
            concurrency: args.upload_concurrency as usize,
        });

    let mut opts = WriteOptions::default();
    opts.zstd_level = args
        .zstd_level
        .or(cfg.zstd_level)
        .unwrap_or(opts.zstd_level);
    if let Some(t) = args.zstd_threads {
        opts.zstd_workers = t;
    }
    let created = Utc::now();
    let meta = BackupMeta {
        id: new_id(created),
        cluster,
        created,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        tags,
        source,
    };
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let count = entries.len();
    let bar = crate::progress::bytes(ctx.quiet, total, "backup");
    let started = Instant::now();
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let outer = write_backup(
        &store,
        entries,
        meta,
        &recipients,
        opts,
        bar.clone(),
        interrupted,
    )
    .await;
    bar.finish_and_clear();
    let outer = outer?;
    if ctx.json() {
        return super::print_json(&outer);
    }
    if !ctx.quiet {
        let a = outer.archive.as_ref().expect("outer manifest has archive");
        eprintln!(
            "backed up {count} {}, {} → {} encrypted, to {store} in {:.1}s",
            if count == 1 { "entry" } else { "entries" },
            crate::progress::human(total),
            crate::progress::human(a.size),
            started.elapsed().as_secs_f64()
        );
    }
    super::print_text(&outer.reference())
}

fn parse_tags(
    flags: &[String],
    config: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Usage> {
    let mut tags = config.clone();
    for t in flags {
        let (k, v) = t
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Usage(format!("--tag '{t}' is not KEY=VALUE")))?;
        tags.insert(k.to_string(), v.to_string());
    }
    Ok(tags)
}

fn gather_sources(ctx: &Ctx, args: &BackupArgs) -> anyhow::Result<(Vec<SourceEntry>, String)> {
    let s = &ctx.config.sources;
    let mut entries = vec![];
    let mut described = vec![];
    if let Some(p) = args
        .etcd_snapshot_file
        .as_ref()
        .or(s.etcd_snapshot_file.as_ref())
    {
        entries.push(local::snapshot_file(p)?);
        described.push(format!("etcd-snapshot-file:{}", p.display()));
    }
    if let Some(p) = args.pki_dir.as_ref().or(s.pki_dir.as_ref()) {
        entries.extend(local::pki_dir(p)?);
        described.push(format!("pki-dir:{}", p.display()));
    }
    let files = if args.files.is_empty() {
        &s.files
    } else {
        &args.files
    };
    for p in files {
        let e = local::plain_file(p)?;
        if entries.iter().any(|x| x.path == e.path) {
            return Err(Usage(format!(
                "--file '{}': another file named {} is already included",
                p.display(),
                e.path
            ))
            .into());
        }
        entries.push(e);
        described.push(format!("file:{}", p.display()));
    }
    if entries.is_empty() {
        return Err(Usage(
            "nothing to back up: give --etcd-snapshot-file FILE, --pki-dir DIR and/or --file PATH"
                .into(),
        )
        .into());
    }
    Ok((entries, described.join(" + ")))
}
