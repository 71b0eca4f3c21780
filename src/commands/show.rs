//! `cpvault show REF`: one outer manifest, as JSON or as a readable summary. The manifest
//! comes from the store, which may be hostile: every string from it is escaped and cut short
//! on its way to the terminal, never printed raw.

use std::fmt::Write as _;

use super::Ctx;
use crate::archive::manifest::EtcdMember;
use crate::cli::ShowArgs;
use crate::progress::human;
use crate::text::escape_for_line;

/// Escaped and bounded text from the manifest.
fn esc(s: &str) -> String {
    escape_for_line(s, 200)
}

/// One member of the recorded membership, `*` marking the one the snapshot came from.
fn member_line(m: &EtcdMember, from: Option<&str>) -> String {
    let mark = if from.is_some_and(|f| f == m.name) {
        "*"
    } else {
        " "
    };
    let name = if m.name.is_empty() {
        "(not started)".to_string()
    } else {
        esc(&m.name)
    };
    let mut line = format!(
        "  {mark} {name}  id {}  peer {}",
        esc(&m.id),
        escape_for_line(&m.peer_urls.join(","), 500)
    );
    if !m.client_urls.is_empty() {
        line.push_str(&format!(
            "  client {}",
            escape_for_line(&m.client_urls.join(","), 500)
        ));
    }
    if mark == "*" {
        line.push_str("  (snapshot taken here)");
    }
    line.push('\n');
    line
}

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
    writeln!(t, "backup:    {}", esc(&m.reference()))?;
    writeln!(t, "created:   {}", m.created.to_rfc3339())?;
    writeln!(t, "completed: {}", m.completed.to_rfc3339())?;
    writeln!(
        t,
        "host:      {}  ({} {})",
        esc(&m.host),
        esc(&m.tool.name),
        esc(&m.tool.version)
    )?;
    writeln!(t, "source:    {}", escape_for_line(&m.source, 1000))?;
    if !m.tags.is_empty() {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(t, "tags:      {}", escape_for_line(&tags.join(", "), 1000))?;
    }
    if let Some(a) = &m.archive {
        writeln!(
            t,
            "archive:   {} ({}, sha256 {})",
            esc(&a.key),
            human(a.size),
            esc(&a.sha256)
        )?;
        writeln!(
            t,
            "encrypted: {} to {}",
            esc(&a.encryption),
            escape_for_line(&a.recipients.join(", "), 2000)
        )?;
    }
    if let Some(e) = &m.etcd {
        let mut facts = vec![format!(
            "{} ({}, sha256 trailer {})",
            esc(&e.entry),
            human(e.db_size),
            if e.hash_trailer { "verified" } else { "absent" }
        )];
        if let Some(v) = &e.version {
            facts.push(format!("etcd {}", esc(v)));
        }
        if let Some(r) = e.revision {
            facts.push(format!("revision {r}"));
        }
        if let Some(k) = e.keys {
            facts.push(format!("{k} keys"));
        }
        if let Some(c) = &e.cluster_id {
            facts.push(format!("cluster {}", esc(c)));
        }
        if let Some(mb) = &e.member_id {
            facts.push(format!("member {}", esc(mb)));
        }
        writeln!(t, "etcd:      {}", facts.join(", "))?;
        if let Some(members) = &e.members {
            writeln!(t, "members:   {}", members.len())?;
            for mb in members {
                t.push_str(&member_line(mb, e.from_member.as_deref()));
            }
        } else if let Some(from) = &e.from_member {
            writeln!(t, "from:      member {}", esc(from))?;
        }
    }
    writeln!(
        t,
        "entries:   {} ({})",
        m.entries.len(),
        human(m.payload_size())
    )?;
    for e in &m.entries {
        writeln!(t, "  {:>10}  {}", human(e.size), esc(&e.path))?;
    }
    certificates(&mut t, &m)?;
    super::print_text(&t)
}

/// The certificate facts: path, subject, notAfter, days left and the key's state, one line
/// each, the ones needing attention marked.
fn certificates(t: &mut String, m: &crate::archive::manifest::Manifest) -> std::fmt::Result {
    if m.certificates.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let expired = crate::certs::expired(&m.certificates, now).len();
    let soon =
        crate::certs::expiring_within(&m.certificates, now, crate::certs::EXPIRY_WARNING_DAYS)
            .len()
            - expired;
    let mut summary = vec![];
    if expired > 0 {
        summary.push(format!("{expired} EXPIRED"));
    }
    if soon > 0 {
        summary.push(format!(
            "{soon} expiring within {} days",
            crate::certs::EXPIRY_WARNING_DAYS
        ));
    }
    writeln!(
        t,
        "certificates: {}{}",
        m.certificates.len(),
        if summary.is_empty() {
            String::new()
        } else {
            format!(" ({})", summary.join(", "))
        }
    )?;
    let w = m
        .certificates
        .iter()
        .map(|c| esc(&c.path).chars().count())
        .max()
        .unwrap_or(0);
    for c in &m.certificates {
        let path = esc(&c.path);
        let Some(not_after) = c.not_after else {
            let why = c.error.as_deref().unwrap_or("no validity recorded");
            writeln!(t, "  {path:w$}  not parseable: {}", esc(why))?;
            continue;
        };
        let days = crate::certs::days_left(not_after, now);
        let left = if not_after <= now {
            format!("EXPIRED {} days ago", -days)
        } else if days <= crate::certs::EXPIRY_WARNING_DAYS {
            format!("{days} days left, RENEW SOON")
        } else {
            format!("{days} days left")
        };
        writeln!(
            t,
            "  {path:w$}  {}  notAfter {} ({left})  key {}",
            esc(c.subject.as_deref().unwrap_or("?")),
            not_after.format("%Y-%m-%dT%H:%M:%SZ"),
            c.key.map_or("?", |k| k.name())
        )?;
    }
    Ok(())
}
