//! `cpvault backup`: gathers sources, recipients and metadata, runs the archive writer, and
//! prints the new `<cluster>/<id>` (or the outer manifest as JSON). With `--all`, backs up
//! every cluster of the config file, two at a time, and ends with a summary table.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use chrono::Utc;
use cpvault_backends::{Store, UploadOptions};
use futures::StreamExt;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::archive::writer::{BackupMeta, WriteOptions};
use crate::archive::{is_valid_cluster, new_id};
use crate::cli::BackupArgs;
use crate::commit::write_backup;
use crate::crypto::Recipients;
use crate::error::Usage;
use crate::sources::gather;
use crate::sources::settings::Sources;

/// Runs the command.
///
/// # Errors
/// Bad input ([`Usage`]), unreadable sources or keys, or a failed upload; nothing is
/// committed on error.
pub async fn run(ctx: &Ctx, args: BackupArgs) -> anyhow::Result<()> {
    let cfg = &ctx.config;
    // Usage errors first, before keys or stores are touched.
    check_zstd_level(args.zstd_level.or(cfg.zstd_level))?;
    let cluster = if args.all {
        None
    } else {
        let cluster = args
            .cluster
            .clone()
            .or_else(|| cfg.cluster.clone())
            .ok_or_else(|| {
                Usage(
                    "no cluster name: pass --cluster NAME (backups are stored as <cluster>/<id>), or --all for every [clusters.NAME] of the config file"
                        .into(),
                )
            })?;
        check_cluster(&cluster)?;
        gather::plan(&merged_sources(ctx, &args, &cluster))?;
        Some(cluster)
    };
    let keys = Keys {
        recipients: recipients(ctx, &args)?,
        signing: ctx.signing_key(&args.signing)?,
    };
    let store = ctx
        .store(&args.store, true)?
        .with_upload_options(UploadOptions {
            part_size: (args.part_size_mib * 1024 * 1024) as usize,
            concurrency: args.upload_concurrency as usize,
        });
    let sinks = ctx.metrics_sinks(&args.metrics);
    let Some(cluster) = cluster else {
        let (result, runs) = run_all(ctx, &args, &store, &keys).await;
        return super::finish_with_metrics(&sinks, &runs, result).await;
    };
    let started = SystemTime::now();
    let clock = Instant::now();
    let outer = backup_one(ctx, &args, &store, &keys, &cluster, !ctx.quiet).await;
    let run = metrics_run(&cluster, started, clock, outer.as_ref().ok());
    let committed = outer.is_ok();
    let result = match outer {
        Ok(outer) if ctx.json() => super::print_json(&outer),
        Ok(outer) => super::print_text(&outer.reference()),
        Err(e) => Err(e),
    };
    // After the backup is timed and told (its sources long cleaned up): the listing cache
    // lets `list` read one object for the cluster instead of one per backup.
    if committed {
        crate::catalog::cache::refresh_clusters(&store, [cluster.as_str()]).await;
    }
    super::finish_with_metrics(&sinks, &[run], result).await
}

/// The metrics of one cluster's backup run.
fn metrics_run(
    cluster: &str,
    started: SystemTime,
    clock: Instant,
    outer: Option<&Manifest>,
) -> crate::metrics::Run {
    crate::metrics::Run {
        backup_size: outer.map(|m| (m.payload_size(), m.archive.as_ref().map_or(0, |a| a.size))),
        ..crate::metrics::Run::ended(cluster, "backup", started, clock, outer.is_some())
    }
}

/// The command line allows 1–19 only; a config file is held to the same range, because levels
/// 20–22 write zstd windows (up to 128 MiB) that readers refuse: a reader's window cap is
/// what bounds the memory a hostile archive can make it use.
fn check_zstd_level(level: Option<i32>) -> Result<(), Usage> {
    match level {
        Some(l) if !(1..=19).contains(&l) => Err(Usage(format!(
            "zstd_level = {l} in the config file: the level must be 1–19 (levels above 19 need a decompression window larger than the {} MiB cpvault reads); change zstd_level",
            1u32 << (crate::archive::reader::ZSTD_WINDOW_LOG_MAX - 20)
        ))),
        _ => Ok(()),
    }
}

fn check_cluster(cluster: &str) -> Result<(), Usage> {
    if is_valid_cluster(cluster) {
        return Ok(());
    }
    Err(Usage(format!(
        "cluster name '{cluster}' is not valid: use 1–63 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
    )))
}

/// Flags over `[clusters.NAME]` over `[sources]`.
fn merged_sources(ctx: &Ctx, args: &BackupArgs, cluster: &str) -> Sources {
    Sources::from(&args.sources).or(&ctx.config.sources_for(Some(cluster)))
}

/// Who can read a new backup, and who vouches for it.
struct Keys {
    recipients: Recipients,
    signing: Option<crate::trust::SigningKey>,
}

fn recipients(ctx: &Ctx, args: &BackupArgs) -> anyhow::Result<Recipients> {
    let cfg = &ctx.config;
    let mut recipients = args.recipients.clone();
    if recipients.is_empty() && args.recipients_files.is_empty() {
        recipients = cfg.recipients.clone();
    }
    let files = if args.recipients_files.is_empty() && args.recipients.is_empty() {
        cfg.recipients_files.clone()
    } else {
        args.recipients_files.clone()
    };
    Ok(crate::crypto::recipients(
        &recipients,
        &files,
        crate::crypto::passphrase_from_env(),
    )?)
}

async fn backup_one(
    ctx: &Ctx,
    args: &BackupArgs,
    store: &Store,
    keys: &Keys,
    cluster: &str,
    report: bool,
) -> anyhow::Result<Manifest> {
    check_cluster(cluster)?;
    let tags = parse_tags(&args.tags, &ctx.config.tags)?;
    let sources = merged_sources(ctx, args, cluster);
    // Opening remote sources can take a while (etcdctl saving a big snapshot on the node).
    // Ctrl-C then waits for them to open, and removes what they left on the node, instead
    // of dying with a plaintext snapshot in the node's temp dir.
    let stop = crate::interrupt::token();
    let gathered = gather::gather(&sources, report).await;
    let mut gathered = gathered?;
    if stop.is_cancelled() {
        crate::say!("interrupted: cleaning up the sources, then stopping");
        gathered.finish().await;
        anyhow::bail!("interrupted before the upload started; nothing was committed");
    }
    let result = write(ctx, args, store, keys, cluster, tags, &mut gathered, report).await;
    gathered.finish().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn write(
    ctx: &Ctx,
    args: &BackupArgs,
    store: &Store,
    keys: &Keys,
    cluster: &str,
    tags: BTreeMap<String, String>,
    gathered: &mut gather::Gathered,
    report: bool,
) -> anyhow::Result<Manifest> {
    let cfg = &ctx.config;
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
        cluster: cluster.to_string(),
        created,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        tags,
        source: gathered.described.join(" + "),
        kit: gathered.kit.take(),
    };
    let entries = std::mem::take(&mut gathered.entries);
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let count = entries.len();
    let bar = crate::progress::bytes(!report, total, &format!("backup {cluster}"));
    let started = Instant::now();
    let stop = crate::interrupt::token();
    let interrupted = stop.cancelled();
    let outer = write_backup(
        store,
        entries,
        meta,
        &keys.recipients,
        opts,
        bar.clone(),
        keys.signing.as_ref(),
        interrupted,
    )
    .await;
    bar.finish_and_clear();
    let outer = outer?;
    if !ctx.quiet {
        warn_about_certificates(&outer);
    }
    if report {
        let a = outer.archive.as_ref().expect("outer manifest has archive");
        crate::say!(
            "backed up {count} {}, {} → {} encrypted, to {store} in {:.1}s",
            if count == 1 { "entry" } else { "entries" },
            crate::progress::human(total),
            crate::progress::human(a.size),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(outer)
}

/// Certificates the backup could not read, or that expire soon: the backup is committed, but
/// the operator should know before the day it is restored.
fn warn_about_certificates(m: &Manifest) {
    let now = Utc::now();
    for c in &m.certificates {
        if let Some(e) = &c.error {
            crate::say!(
                "warning: {}: {} is not a certificate cpvault can read ({}); it is backed up, but its expiry is not recorded or checked",
                m.reference(),
                c.path,
                crate::text::escape_for_line(e, 300)
            );
        }
    }
    let soon =
        crate::certs::expiring_within(&m.certificates, now, crate::certs::EXPIRY_WARNING_DAYS);
    for c in soon {
        let Some(t) = c.not_after else { continue };
        let when = if t <= now { "expired" } else { "expires" };
        crate::say!(
            "warning: {}: {} {when} {} ({} days from now); renew it (kubeadm certs renew) and take a new backup",
            m.reference(),
            c.path,
            t.to_rfc3339(),
            crate::certs::days_left(t, now)
        );
    }
}

/// One row of the `--all` summary.
#[derive(serde::Serialize)]
struct Outcome {
    cluster: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    seconds: f64,
    #[serde(skip)]
    metrics: Option<crate::metrics::Run>,
}

async fn run_all(
    ctx: &Ctx,
    args: &BackupArgs,
    store: &Store,
    keys: &Keys,
) -> (anyhow::Result<()>, Vec<crate::metrics::Run>) {
    let names: Vec<String> = ctx.config.clusters.keys().cloned().collect();
    if names.is_empty() {
        return (
            Err(Usage(
                "--all backs up the [clusters.NAME] sections of the config file, and it has none"
                    .into(),
            )
            .into()),
            vec![],
        );
    }
    let mut outcomes: Vec<Outcome> = futures::stream::iter(names.iter().map(|name| async move {
        let started = SystemTime::now();
        let clock = Instant::now();
        let r = backup_one(ctx, args, store, keys, name, false).await;
        let seconds = clock.elapsed().as_secs_f64();
        let metrics = Some(metrics_run(name, started, clock, r.as_ref().ok()));
        match r {
            Ok(m) => Outcome {
                cluster: name.clone(),
                ok: true,
                reference: Some(m.reference()),
                error: None,
                seconds,
                metrics,
            },
            Err(e) => Outcome {
                cluster: name.clone(),
                ok: false,
                reference: None,
                error: Some(format!("{e:#}")),
                seconds,
                metrics,
            },
        }
    }))
    .buffer_unordered(2)
    .collect()
    .await;
    outcomes.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    let runs = outcomes
        .iter_mut()
        .filter_map(|o| o.metrics.take())
        .collect();
    let result = summarize(ctx, &outcomes);
    let committed = outcomes.iter().filter(|o| o.ok).map(|o| o.cluster.as_str());
    crate::catalog::cache::refresh_clusters(store, committed).await;
    (result, runs)
}

fn summarize(ctx: &Ctx, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if ctx.json() {
        super::print_json(&outcomes)?;
    } else {
        let width = outcomes
            .iter()
            .map(|o| o.cluster.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let mut t = format!(
            "{:<width$}  {:<6}  {:>7}  BACKUP / ERROR\n",
            "CLUSTER", "RESULT", "TIME"
        );
        for o in outcomes {
            t.push_str(&format!(
                "{:<width$}  {:<6}  {:>6.1}s  {}\n",
                o.cluster,
                if o.ok { "ok" } else { "FAILED" },
                o.seconds,
                o.reference.as_deref().or(o.error.as_deref()).unwrap_or("")
            ));
        }
        super::print_text(t.trim_end())?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} cluster backups failed (see the table above); the others are committed",
            outcomes.len()
        );
    }
    Ok(())
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
