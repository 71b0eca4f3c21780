//! `cpvault prune`: builds the prune plan from the store's catalog and the policy (flags, or
//! the config file's `[retention]` and `[clusters.NAME.retention]`), prints it, and unless
//! `--dry-run` executes it: each removed backup loses its manifest first, then its signature
//! and archive, so a listed backup never lacks its archive, even if prune dies halfway. With
//! allowed signers, the plan is made over trusted backups only; untrusted ones are reported
//! and left in place unless `--remove-untrusted`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{TimeDelta, Utc};

use super::Ctx;
use crate::archive::{archive_key, manifest_key};
use crate::cli::PruneArgs;
use crate::error::Usage;
use crate::plan::prune::{plan, Inputs, Orphan, PrunePlan, Untrusted};
use crate::plan::retention::{Policy, Snapshot};
use crate::text::escape_for_line;
use crate::trust::signature_key;

/// Runs the command.
///
/// # Errors
/// A bad policy ([`Usage`]), an unreadable store, or a failed delete (the message names the
/// object; what was already removed stays removed, and a rerun finishes the job).
pub async fn run(ctx: &Ctx, args: PruneArgs) -> anyhow::Result<()> {
    let flags = args.policy.clone();
    flags.validate().map_err(|e| Usage(e.to_string()))?;
    let (default, per_cluster) = if flags.is_empty() {
        let per: BTreeMap<String, Policy> = ctx
            .config
            .clusters
            .iter()
            .filter_map(|(name, c)| c.retention.clone().map(|p| (name.clone(), p)))
            .collect();
        (ctx.config.retention.clone().unwrap_or_default(), per)
    } else {
        (flags, BTreeMap::new())
    };
    for p in std::iter::once(&default).chain(per_cluster.values()) {
        p.validate().map_err(|e| Usage(e.to_string()))?;
    }

    let store = ctx.store(&args.store, false)?;
    let signers = ctx.allowed_signers(&args.trust)?;
    let cat = crate::catalog::load_with(&store, args.cluster.as_deref(), signers.as_ref()).await?;
    let untrusted: Vec<Untrusted> = cat
        .untrusted
        .iter()
        .map(|(m, reason)| Untrusted {
            cluster: m.cluster.clone(),
            id: m.id.clone(),
            reason: reason.clone(),
        })
        .collect();
    for (key, why) in &cat.unreadable {
        crate::say!("warning: manifest {key} is unreadable and left alone: {why}");
    }
    let backups: Vec<Snapshot> = cat
        .backups
        .iter()
        .filter(|m| !cat.broken.contains(&m.reference()))
        .map(|m| Snapshot {
            cluster: m.cluster.clone(),
            id: m.id.clone(),
            created: m.created,
            tags: m.tags.clone(),
        })
        .collect();
    // Staging files of uploads killed midway (local stores) are orphans too, under the same
    // grace period.
    let leftovers: Vec<_> = store
        .upload_leftovers()
        .into_iter()
        .filter(|o| crate::catalog::is_upload_leftover(&o.key, args.cluster.as_deref()))
        .collect();
    let orphans: Vec<Orphan> = cat
        .incomplete
        .iter()
        .chain(leftovers.iter())
        .map(|o| Orphan {
            key: o.key.clone(),
            last_modified: o.last_modified,
        })
        .collect();
    let plan = plan(&Inputs {
        backups: &backups,
        broken: &cat.broken,
        orphans: &orphans,
        untrusted: &untrusted,
        policies: &per_cluster,
        default: &default,
        tz: args.timezone,
        now: Utc::now(),
        grace: TimeDelta::hours(i64::from(args.grace_hours)),
    });

    if ctx.json() {
        super::print_json(&plan)?;
    } else {
        super::print_text(&render(
            &plan,
            args.dry_run,
            args.remove_broken,
            args.remove_untrusted,
        ))?;
    }
    if args.dry_run {
        return Ok(());
    }
    let started = std::time::SystemTime::now();
    let clock = std::time::Instant::now();
    let result = execute(ctx, &args, &store, &plan).await;
    // Per cluster: the backups kept, and whether the prune as a whole succeeded.
    let mut kept: BTreeMap<&str, u64> = BTreeMap::new();
    for d in plan.keep.iter().chain(&plan.remove) {
        kept.entry(d.cluster.as_str()).or_default();
    }
    for d in &plan.keep {
        *kept.entry(d.cluster.as_str()).or_default() += 1;
    }
    let runs: Vec<crate::metrics::Run> = kept
        .into_iter()
        .map(|(cluster, n)| crate::metrics::Run {
            backups: result.is_ok().then_some(n),
            ..crate::metrics::Run::ended(cluster, "prune", started, clock, result.is_ok())
        })
        .collect();
    // After the prune is timed, and also when it failed midway: pruned manifests leave the
    // listing caches too.
    crate::catalog::cache::refresh_clusters(&store, touched(&args, &plan)).await;
    super::finish_with_metrics(&ctx.metrics_sinks(&args.metrics), &runs, result).await
}

/// Carries out the plan.
async fn execute(
    ctx: &Ctx,
    args: &PruneArgs,
    store: &cpvault_backends::Store,
    plan: &PrunePlan,
) -> anyhow::Result<()> {
    delete(args, store, plan).await?;
    if !ctx.quiet && !ctx.json() {
        crate::say!(
            "removed {} backups and {} abandoned uploads from {store}",
            plan.remove.len(),
            plan.remove_orphans.len()
        );
    }
    Ok(())
}

/// The clusters whose backups the plan removes (so whose listing caches change).
fn touched<'a>(args: &PruneArgs, plan: &'a PrunePlan) -> std::collections::BTreeSet<&'a str> {
    let broken = plan
        .broken
        .iter()
        .filter(|_| args.remove_broken)
        .filter_map(|r| r.split_once('/').map(|(c, _)| c));
    plan.remove
        .iter()
        .map(|d| d.cluster.as_str())
        .chain(
            plan.untrusted
                .iter()
                .filter(|_| args.remove_untrusted)
                .map(|u| u.cluster.as_str()),
        )
        .chain(broken)
        .collect()
}

async fn delete(
    args: &PruneArgs,
    store: &cpvault_backends::Store,
    plan: &PrunePlan,
) -> anyhow::Result<()> {
    // Manifest first: from that moment the backup is no longer listed, and its archive is an
    // orphan that a later prune removes even if this one dies before the next line.
    let doomed = plan.remove.iter().map(|d| (&d.cluster, &d.id));
    let forged = plan
        .untrusted
        .iter()
        .filter(|_| args.remove_untrusted)
        .map(|u| (&u.cluster, &u.id));
    for (cluster, id) in doomed.chain(forged) {
        store.delete(&manifest_key(cluster, id)).await?;
        store.delete(&signature_key(cluster, id)).await?;
        store.delete(&archive_key(cluster, id)).await?;
        // What belongs to the backup goes with it.
        store.delete(&crate::drill::drill_key(cluster, id)).await?;
        store
            .delete(&format!(
                "{cluster}/{id}{}",
                crate::drill::DRILL_SIGNATURE_SUFFIX
            ))
            .await?;
    }
    for o in &plan.remove_orphans {
        if crate::catalog::is_upload_leftover(&o.key, None) {
            store.remove_upload_leftover(&o.key)?;
        } else {
            store.delete(&o.key).await?;
        }
    }
    if args.remove_broken {
        for r in &plan.broken {
            let (c, id) = crate::catalog::parse_ref(r)?;
            store.delete(&manifest_key(&c, &id)).await?;
        }
    }
    Ok(())
}

fn render(p: &PrunePlan, dry_run: bool, remove_broken: bool, remove_untrusted: bool) -> String {
    let mut t = String::new();
    for c in &p.empty_policy {
        let _ = writeln!(t, "cluster {c}: no retention rule given, so nothing of it is removed (see `cpvault prune --help`)");
    }
    let rows: Vec<(&str, &crate::plan::retention::Decision)> = p
        .keep
        .iter()
        .map(|d| ("keep", d))
        .chain(p.remove.iter().map(|d| ("REMOVE", d)))
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            t,
            "{:6}  {:36}  {:20}  REASONS",
            "ACTION", "BACKUP", "CREATED (UTC)"
        );
        let mut rows = rows;
        rows.sort_by(|a, b| {
            (&b.1.created, &b.1.cluster, &b.1.id).cmp(&(&a.1.created, &a.1.cluster, &a.1.id))
        });
        for (action, d) in rows {
            let _ = writeln!(
                t,
                "{action:6}  {:36}  {:20}  {}",
                format!("{}/{}", d.cluster, d.id),
                d.created.format("%Y-%m-%d %H:%M:%S"),
                d.reasons.join(", ")
            );
        }
    }
    for o in &p.remove_orphans {
        let _ = writeln!(
            t,
            "REMOVE  {}  abandoned upload (no manifest) from {}",
            o.key,
            o.last_modified.format("%Y-%m-%d %H:%M:%S")
        );
    }
    for o in &p.young_orphans {
        let _ = writeln!(t, "keep    {}  upload without manifest, younger than the grace period (may be in progress)", o.key);
    }
    for b in &p.broken {
        let action = if remove_broken { "REMOVE" } else { "BROKEN" };
        let _ = writeln!(
            t,
            "{action}  {b}  manifest whose archive is missing{}",
            if remove_broken {
                ""
            } else {
                " (--remove-broken removes it)"
            }
        );
    }
    for u in &p.untrusted {
        let action = if remove_untrusted {
            "REMOVE"
        } else {
            "UNTRUSTED"
        };
        let _ = writeln!(
            t,
            "{action}  {}/{}  {}{}",
            u.cluster,
            u.id,
            escape_for_line(&u.reason, 300),
            if remove_untrusted {
                ""
            } else {
                " (not counted by the rules; --remove-untrusted removes it)"
            }
        );
    }
    let _ = writeln!(
        t,
        "{}: keep {}, remove {} backups and {} abandoned uploads",
        if dry_run {
            "dry run, nothing removed"
        } else {
            "plan"
        },
        p.keep.len(),
        p.remove.len(),
        p.remove_orphans.len()
    );
    t
}
