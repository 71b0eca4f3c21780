//! `cpvault diff FROM TO`: the keys added, removed and changed between two backups of a
//! cluster, counted per resource and namespace (JSON lists every key). Both snapshots are
//! read like `inspect` reads one; values are compared by digest, never kept.

use std::fmt::Write as _;

use super::Ctx;
use crate::cli::DiffArgs;
use crate::inspect::mvcc::Wants;
use crate::inspect::summary::{diff, Change};
use crate::text::escape_for_line;

/// Runs the command.
///
/// # Errors
/// As `inspect`'s, for either backup.
pub async fn run(ctx: &Ctx, args: DiffArgs) -> anyhow::Result<()> {
    let wants = || Wants {
        digests: true,
        values: None,
    };
    let (a_ref, a) = super::inspect::open_snapshot(
        ctx,
        &args.store,
        &args.trust,
        &args.identity,
        &args.from,
        wants(),
    )
    .await?;
    let (b_ref, b) = super::inspect::open_snapshot(
        ctx,
        &args.store,
        &args.trust,
        &args.identity,
        &args.to,
        wants(),
    )
    .await?;
    let d = diff(a_ref, &a, b_ref, &b, args.prefix.as_bytes());
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
