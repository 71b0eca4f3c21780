//! `cpvault show REF`: one outer manifest, as JSON or as a readable summary.

use std::fmt::Write as _;

use super::Ctx;
use crate::cli::ShowArgs;
use crate::progress::human;

/// Runs the command.
///
/// # Errors
/// A bad reference, a missing backup, or an unreadable manifest.
pub async fn run(ctx: &Ctx, args: ShowArgs) -> anyhow::Result<()> {
    crate::catalog::parse_ref(&args.reference)?;
    let store = ctx.store(&args.store, false)?;
    let m = crate::catalog::resolve(&store, &args.reference).await?;
    if ctx.json() {
        return super::print_json(&m);
    }
    let mut t = String::new();
    writeln!(t, "backup:    {}", m.reference())?;
    writeln!(t, "created:   {}", m.created.to_rfc3339())?;
    writeln!(t, "completed: {}", m.completed.to_rfc3339())?;
    writeln!(
        t,
        "host:      {}  ({} {})",
        m.host, m.tool.name, m.tool.version
    )?;
    writeln!(t, "source:    {}", m.source)?;
    if !m.tags.is_empty() {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(t, "tags:      {}", tags.join(", "))?;
    }
    if let Some(e) = &m.etcd {
        writeln!(
            t,
            "etcd:      {} ({}, sha256 trailer {}{})",
            e.entry,
            human(e.db_size),
            if e.hash_trailer { "present" } else { "absent" },
            e.revision
                .map(|r| format!(", revision {r}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(a) = &m.archive {
        writeln!(
            t,
            "archive:   {} ({}, sha256 {})",
            a.key,
            human(a.size),
            a.sha256
        )?;
        writeln!(
            t,
            "encrypted: {} to {}",
            a.encryption,
            a.recipients.join(", ")
        )?;
    }
    if let Some(e) = &m.etcd {
        let mut facts = vec![format!(
            "{} ({}, sha256 trailer {})",
            e.entry,
            human(e.db_size),
            if e.hash_trailer { "verified" } else { "absent" }
        )];
        if let Some(v) = &e.version {
            facts.push(format!("etcd {v}"));
        }
        if let Some(r) = e.revision {
            facts.push(format!("revision {r}"));
        }
        if let Some(c) = &e.cluster_id {
            facts.push(format!("cluster {c}"));
        }
        if let Some(mb) = &e.member_id {
            facts.push(format!("member {mb}"));
        }
        writeln!(t, "etcd:      {}", facts.join(", "))?;
    }
    writeln!(
        t,
        "entries:   {} ({})",
        m.entries.len(),
        human(m.payload_size())
    )?;
    for e in &m.entries {
        writeln!(t, "  {:>10}  {}", human(e.size), e.path)?;
    }
    super::print_text(&t)
}
