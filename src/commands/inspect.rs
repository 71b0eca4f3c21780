//! `cpvault inspect REF`: what a backup's etcd snapshot holds — revision, compaction, live
//! keys, and counts and bytes per resource and namespace — read from the store with no
//! restore (the work is `crate::inspect`'s). Also the one way `diff` and `get` open a
//! backup's snapshot, so all three refuse what `extract` refuses, the same way.

use std::fmt::Write as _;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::cli::{IdentityArgs, InspectArgs, StoreArgs, TrustArgs};
use crate::error::{Usage, VerifyFailed};
use crate::inspect::bbolt::BoltError;
use crate::inspect::mvcc::{Snapshot, Wants};
use crate::inspect::summary::{summarize, Count};
use crate::inspect::InspectError;
use crate::progress::human;
use crate::text::escape_for_line;

/// Reads the snapshot of the backup `reference`: resolves it, judges its author, and reads
/// it in two verified passes. Returns its `<cluster>/<id>` and the snapshot.
///
/// # Errors
/// No identity (exit 2), a missing backup, an untrusted or failing backup or a corrupt
/// snapshot (exit 3, the verify report shown), a backup without a snapshot.
pub async fn open_snapshot(
    ctx: &Ctx,
    store: &StoreArgs,
    trust: &TrustArgs,
    identity: &IdentityArgs,
    reference: &str,
    wants: Wants,
) -> anyhow::Result<(Manifest, Snapshot)> {
    crate::catalog::parse_ref(reference)?;
    let store = ctx.store(store, false)?;
    let identities = ctx.identities(identity)?.ok_or_else(|| {
        Usage("reading a backup's keys needs its key: pass -i IDENTITY_FILE (or set CPVAULT_PASSPHRASE for a passphrase archive)".into())
    })?;
    let signers = ctx.allowed_signers(trust)?;
    let (m, who) = crate::catalog::resolve_with(&store, reference, signers.as_ref()).await?;
    super::note_authorship(ctx, &m.reference(), &who);
    match crate::inspect::read_backup(&store, &m, &who, identities, wants, ctx.quiet).await {
        Ok(s) => Ok((m, s)),
        Err(InspectError::Verify(report)) => Err(super::verify_failed(
            ctx,
            &report,
            format!("{} failed verification; nothing from it was used", m.reference()),
        )),
        Err(InspectError::Snapshot(BoltError::Limit(why))) => {
            anyhow::bail!("{}: {why}", m.reference())
        }
        Err(e @ InspectError::Snapshot(_)) => Err(VerifyFailed(format!(
            "{}: {e}; the archive itself verified, so the snapshot was corrupt when taken — try an older backup",
            m.reference()
        ))
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Runs the command.
///
/// # Errors
/// As [`open_snapshot`].
pub async fn run(ctx: &Ctx, args: InspectArgs) -> anyhow::Result<()> {
    let (m, snap) = open_snapshot(
        ctx,
        &args.store,
        &args.trust,
        &args.identity,
        &args.reference,
        Wants::default(),
    )
    .await?;
    let s = summarize(m.reference(), &snap);
    if ctx.json() {
        return super::print_json(&s);
    }
    let esc = |t: &str| escape_for_line(t, 200);
    let row = |name: &str, c: &Count| {
        format!("  {:<48} {:>9} {:>11}\n", esc(name), c.keys, human(c.bytes))
    };
    let mut t = String::new();
    writeln!(t, "backup:      {}", esc(&s.backup))?;
    writeln!(t, "revision:    {}", s.revision)?;
    let compacted = s
        .compacted_revision
        .map_or("never".to_string(), |r| r.to_string());
    match s.scheduled_compaction {
        Some(r) => writeln!(
            t,
            "compacted:   {compacted} (compaction to {r} was unfinished)"
        )?,
        None => writeln!(t, "compacted:   {compacted}")?,
    }
    if let Some(i) = s.consistent_index {
        writeln!(t, "raft index:  {i}")?;
    }
    writeln!(
        t,
        "live keys:   {} ({}), {} records kept in the snapshot",
        s.total.keys,
        human(s.total.bytes),
        s.records
    )?;
    writeln!(t, "\n  {:<48} {:>9} {:>11}", "RESOURCE", "KEYS", "BYTES")?;
    for r in &s.resources {
        t.push_str(&row(&r.resource, &r.count));
        if args.namespaces {
            for (ns, c) in &r.namespaces {
                t.push_str(&row(&format!("  {ns}"), c));
            }
        }
    }
    writeln!(t, "\n  {:<48} {:>9} {:>11}", "NAMESPACE", "KEYS", "BYTES")?;
    for n in &s.namespaces {
        t.push_str(&row(&n.namespace, &n.count));
    }
    t.push_str(&row("(cluster-scoped)", &s.cluster_scoped));
    super::print_text(&t)
}
