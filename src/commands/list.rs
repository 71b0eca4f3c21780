//! `cpvault list`: committed backups, newest first, as a table or a JSON array of outer
//! manifests. Unreadable manifests are reported on stderr, never silently dropped.

use std::fmt::Write as _;

use super::Ctx;
use crate::cli::ListArgs;
use crate::progress::human;

/// Runs the command.
///
/// # Errors
/// The store cannot be listed.
pub async fn run(ctx: &Ctx, args: ListArgs) -> anyhow::Result<()> {
    let store = ctx.store(&args.store, false)?;
    let cluster = args.cluster.or_else(|| ctx.config.cluster.clone());
    let cat = crate::catalog::load(&store, cluster.as_deref()).await?;
    for (key, why) in &cat.unreadable {
        eprintln!("warning: manifest {key} is unreadable and not listed: {why}");
    }
    if ctx.json() {
        return super::print_json(&cat.backups);
    }
    if cat.backups.is_empty() {
        if !ctx.quiet {
            eprintln!("no backups in {store}");
        }
        return Ok(());
    }
    let mut t = String::new();
    let w = cat
        .backups
        .iter()
        .map(|m| m.reference().len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        t,
        "{:w$}  {:20}  {:>10}  {:>10}  {:>7}  TAGS",
        "BACKUP", "CREATED (UTC)", "DATA", "STORED", "ENTRIES"
    )?;
    for m in &cat.backups {
        let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            t,
            "{:w$}  {:20}  {:>10}  {:>10}  {:>7}  {}",
            m.reference(),
            m.created.format("%Y-%m-%d %H:%M:%S"),
            human(m.payload_size()),
            m.archive.as_ref().map_or("?".into(), |a| human(a.size)),
            m.entries.len(),
            tags.join(",")
        )?;
    }
    super::print_text(&t)
}
