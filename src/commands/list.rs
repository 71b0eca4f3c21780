//! `cpvault list`: committed backups, newest first, with who signed each and whether a
//! certificate in it is expired or expires within 30 days, as a table or a JSON array of
//! outer manifests (each with `signature` and `expiring_certificates` added). Unreadable manifests
//! are reported on stderr, never silently dropped; with allowed signers, untrusted backups
//! are listed and marked, never hidden.

use std::fmt::Write as _;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::cli::ListArgs;
use crate::progress::human;
use crate::text::escape_for_line;
use crate::trust::Authorship;

/// One backup in `--output json`: its outer manifest with a `signature` object and the
/// certificates that are expired or expire within 30 days added.
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    manifest: &'a Manifest,
    signature: &'a Authorship,
    expiring_certificates: Vec<Expiring<'a>>,
}

/// A certificate `list` flags.
#[derive(serde::Serialize)]
struct Expiring<'a> {
    path: &'a str,
    not_after: chrono::DateTime<chrono::Utc>,
    days_left: i64,
    expired: bool,
}

fn expiring(m: &Manifest, now: chrono::DateTime<chrono::Utc>) -> Vec<Expiring<'_>> {
    crate::certs::expiring_within(&m.certificates, now, crate::certs::EXPIRY_WARNING_DAYS)
        .into_iter()
        .filter_map(|c| {
            let t = c.not_after?;
            Some(Expiring {
                path: &c.path,
                not_after: t,
                days_left: crate::certs::days_left(t, now),
                expired: t <= now,
            })
        })
        .collect()
}

/// The CERTS column: `-` when the backup recorded no certificate facts.
fn certs_column(m: &Manifest, now: chrono::DateTime<chrono::Utc>) -> String {
    if m.certificates.is_empty() {
        return "-".into();
    }
    let flagged = expiring(m, now);
    let expired = flagged.iter().filter(|e| e.expired).count();
    match (expired, flagged.len()) {
        (0, 0) => "ok".into(),
        (0, n) => format!("{n} EXPIRING"),
        (e, _) => format!("{e} EXPIRED"),
    }
}

/// Runs the command.
///
/// # Errors
/// The store cannot be listed, or the allowed signers file cannot be used.
pub async fn run(ctx: &Ctx, args: ListArgs) -> anyhow::Result<()> {
    let store = ctx.store(&args.store, false)?;
    let cluster = args.cluster.or_else(|| ctx.config.cluster.clone());
    let signers = ctx.allowed_signers(&args.trust)?;
    let mut cat = crate::catalog::load_cached(&store, cluster.as_deref(), signers.as_ref()).await?;
    for (key, why) in &cat.unreadable {
        crate::say!(
            "warning: manifest {} is unreadable and not listed: {}",
            escape_for_line(key, 200),
            escape_for_line(why, 300)
        );
    }
    let mut rows: Vec<(Manifest, Authorship)> = cat
        .backups
        .into_iter()
        .chain(cat.untrusted.into_iter().map(|(m, _)| m))
        .map(|m| {
            let who = cat
                .authorship
                .remove(&m.reference())
                .unwrap_or(Authorship::NotChecked { signed: false });
            (m, who)
        })
        .collect();
    rows.sort_by(|(a, _), (b, _)| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
    let now = chrono::Utc::now();
    if ctx.json() {
        let values: Vec<Row> = rows
            .iter()
            .map(|(manifest, signature)| Row {
                manifest,
                signature,
                expiring_certificates: expiring(manifest, now),
            })
            .collect();
        return super::print_json(&values);
    }
    if rows.is_empty() {
        if !ctx.quiet {
            crate::say!("no backups in {store}");
        }
        return Ok(());
    }
    let signatures: Vec<String> = rows
        .iter()
        .map(|(_, who)| match who {
            Authorship::Trusted { signer } => {
                escape_for_line(&format!("trusted ({})", signer.principals), 60)
            }
            other => other.short().to_string(),
        })
        .collect();
    let sw = signatures
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(9)
        .max(9);
    let mut t = String::new();
    let w = rows
        .iter()
        .map(|(m, _)| m.reference().len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        t,
        "{:w$}  {:20}  {:>10}  {:>10}  {:>7}  {:sw$}  {:10}  TAGS",
        "BACKUP", "CREATED (UTC)", "DATA", "STORED", "ENTRIES", "SIGNATURE", "CERTS"
    )?;
    for ((m, _), signature) in rows.iter().zip(&signatures) {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            t,
            "{:w$}  {:20}  {:>10}  {:>10}  {:>7}  {:sw$}  {:10}  {}",
            m.reference(),
            m.created.format("%Y-%m-%d %H:%M:%S"),
            human(m.payload_size()),
            m.archive.as_ref().map_or("?".into(), |a| human(a.size)),
            m.entries.len(),
            signature,
            certs_column(m, now),
            escape_for_line(&tags.join(","), 200)
        )?;
    }
    super::print_text(&t)
}
