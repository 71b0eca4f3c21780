//! `cpvault diff FROM TO`: the keys added, removed and changed between two backups of a
//! cluster, counted per resource and namespace (JSON lists every key). Both snapshots are
//! read like `inspect` reads one; values are compared by digest, never kept.

use std::fmt::Write as _;

use super::Ctx;
use crate::catalog::parse_ref;
use crate::cli::DiffArgs;
use crate::error::Usage;
use crate::inspect::mvcc::Wants;
use crate::inspect::summary::{diff, Change};
use crate::text::escape_for_line;

/// Runs the command.
///
/// # Errors
/// As `inspect`'s, for either backup.
pub async fn run(ctx: &Ctx, args: DiffArgs) -> anyhow::Result<()> {
    let (from_cluster, _) = parse_ref(&args.from)?;
    let (to_cluster, _) = parse_ref(&args.to)?;
    if from_cluster != to_cluster && !args.across_clusters {
        return Err(Usage(format!(
            "{} and {} are backups of different clusters ({from_cluster}, {to_cluster}): nearly every key would differ for that reason alone; pass --across-clusters to compare them anyway",
            args.from, args.to
        ))
        .into());
    }
    // Both at once: each is a download, a decryption and two passes over a snapshot.
    let [from, to] = [&args.from, &args.to].map(|reference| {
        let wants = Wants {
            digests: true,
            values: None,
        };
        super::inspect::open_snapshot(
            ctx,
            &args.store,
            &args.trust,
            &args.identity,
            reference,
            wants,
        )
    });
    let ((a_ref, a), (b_ref, b)) = tokio::try_join!(from, to)?;
    let id = |m: &crate::archive::manifest::Manifest| m.etcd.as_ref()?.cluster_id.clone();
    if let (Some(x), Some(y)) = (id(&a_ref), id(&b_ref)) {
        if x != y && !args.across_clusters && !ctx.quiet {
            crate::say!(
                "note: the two snapshots come from different etcd clusters (cluster ID {} and {}): a restore in between gives a new ID, another cluster under the same name does too",
                escape_for_line(&x, 40),
                escape_for_line(&y, 40)
            );
        }
    }
    let d = diff(
        a_ref.reference(),
        &a,
        b_ref.reference(),
        &b,
        args.prefix.as_bytes(),
    );
    if ctx.json() {
        return super::print_json(&d);
    }
    let esc = |t: &str| escape_for_line(t, 200);
    let mut t = String::new();
    writeln!(
        t,
        "{} (revision {}) → {} (revision {}){}",
        esc(&d.from),
        d.from_revision,
        esc(&d.to),
        d.to_revision,
        if args.prefix.is_empty() {
            String::new()
        } else {
            format!(", keys under {}", esc(&args.prefix))
        }
    )?;
    writeln!(
        t,
        "{} added, {} removed, {} changed",
        d.total.added, d.total.removed, d.total.changed
    )?;
    if d.keys.is_empty() {
        return super::print_text(&t);
    }
    writeln!(
        t,
        "\n  {:<40} {:<24} {:>7} {:>7} {:>7}",
        "RESOURCE", "NAMESPACE", "ADDED", "REMOVED", "CHANGED"
    )?;
    for (resource, namespaces) in &d.groups {
        for (ns, c) in namespaces {
            let ns = if ns.is_empty() {
                "(cluster-scoped)"
            } else {
                ns
            };
            writeln!(
                t,
                "  {:<40} {:<24} {:>7} {:>7} {:>7}",
                esc(resource),
                esc(ns),
                c.added,
                c.removed,
                c.changed
            )?;
        }
    }
    // Text lists the first keys; JSON lists them all.
    const LISTED: usize = 100;
    t.push('\n');
    for k in d.keys.iter().take(LISTED) {
        let mark = match k.change {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed => '~',
        };
        writeln!(t, "{mark} {}", esc(&k.key))?;
    }
    if d.keys.len() > LISTED {
        writeln!(
            t,
            "… and {} more (--output json lists every key)",
            d.keys.len() - LISTED
        )?;
    }
    super::print_text(&t)
}
