//! `restore --rollback RESTORE_ID`: each node's journal read back from it, printed, and
//! (after the user's yes) undone in reverse by the core's rollback — node by node, each
//! undoing only its own steps. Nothing here decides what to undo: the journal says.

use crate::cli::RestoreArgs;
use crate::error::Usage;
use crate::restore::journal::JournalError;
use crate::sources::settings::Sources;
use crate::sources::ssh::Node;

use super::nodes::{connect_with_layouts, destinations};
use super::render::ask;
use super::Ctx;

/// `--rollback RESTORE_ID`: the journal read back from each node, printed, and (after the
/// user's yes) undone in reverse.
pub(super) async fn rollback(
    ctx: &Ctx,
    args: &RestoreArgs,
    settings: &Sources,
    id: &str,
) -> anyhow::Result<()> {
    let dests = destinations(args, settings);
    if dests.is_empty() && settings.kubeconfig.is_none() {
        return Err(Usage(
            "restore --rollback needs the node: --ssh USER@HOST (every node of the restore, with its node flags), or --kubeconfig FILE / --cluster NAME to find it".into(),
        )
        .into());
    }
    crate::restore::journal::check_id(id)?;
    let (nodes, layouts) = connect_with_layouts(ctx, args, settings, &dests).await?;
    let result = roll_back_all(ctx, args, &nodes, &layouts, id).await;
    for node in nodes {
        node.close().await;
    }
    result
}

/// Reads every node's journal first, shows them together and asks once, then undoes node by
/// node: a "no" changes no node.
async fn roll_back_all(
    ctx: &Ctx,
    args: &RestoreArgs,
    nodes: &[Node],
    layouts: &[crate::restore::plan::NodeLayout],
    id: &str,
) -> anyhow::Result<()> {
    let mut found = vec![];
    for (node, l) in nodes.iter().zip(layouts) {
        match crate::restore::journal::read(node, &l.staging_parent, id).await {
            // Over several nodes, one that never got to a change has no journal.
            Err(e @ JournalError::NotFound { .. }) if nodes.len() > 1 => {
                if !ctx.quiet {
                    crate::say!("{}: nothing to undo there ({e})", node.destination());
                }
            }
            Err(e) => return Err(e.into()),
            Ok(j) => found.push((
                node,
                crate::restore::journal::path(&l.staging_parent, id),
                j,
            )),
        }
    }
    if args.dry_run && ctx.json() {
        let plans: Vec<serde_json::Value> = found
            .iter()
            .map(|(node, path, j)| {
                let undo = undo_order(j);
                serde_json::json!({
                    "restore_id": id, "node": node.destination(), "journal": path,
                    "backup": j.backup, "undo": undo,
                })
            })
            .collect();
        // One object for one node given, an array for several (whatever was found).
        return match (nodes.len(), plans.as_slice()) {
            (1, [one]) => super::super::print_json(one),
            _ => super::super::print_json(&serde_json::Value::Array(plans)),
        };
    }
    let mut text = String::new();
    for (node, path, j) in &found {
        text.push_str(&undo_text(id, &node.destination(), path, j));
    }
    if args.dry_run {
        return super::super::print_text(text.trim_end());
    }
    let dests: Vec<String> = found.iter().map(|(n, _, _)| n.destination()).collect();
    if found.is_empty() {
        return Ok(());
    }
    if !args.yes {
        ask(
            &text,
            &format!(
                "Type 'yes' to roll back restore {id} on {}: ",
                dests.join(", ")
            ),
        )?;
    } else if !ctx.quiet {
        crate::say_raw!("{text}");
    }
    for (node, path, j) in &found {
        let dest = node.destination();
        match crate::restore::roll_back_journal(node, path, j).await {
            crate::restore::execute::Rollback::Complete => {
                if !ctx.quiet {
                    crate::say!(
                        "rolled back restore {id} on {dest}: the node is as it was before the restore"
                    );
                }
            }
            stopped => anyhow::bail!("rollback of restore {id} on {dest}: {stopped}"),
        }
    }
    Ok(())
}

/// What the rollback of one node's journal undoes, in order.
fn undo_text(id: &str, dest: &str, path: &str, j: &crate::restore::journal::Journal) -> String {
    let mut text = format!(
        "roll back restore {id} of {} on {dest} (journal {path}), in this order:\n",
        crate::text::escape_for_line(&j.backup, 200)
    );
    let undo = undo_order(j);
    for (i, e) in undo.iter().enumerate() {
        let state = if e.done { "" } else { " (was running)" };
        text.push_str(&format!(
            "{:>2}. undo {}{state}\n      run:  {}\n",
            i + 1,
            e.name,
            e.undo
        ));
    }
    if undo.is_empty() {
        text.push_str("    nothing: no step that changes the node had started\n");
    }
    text
}

/// The journal's steps that have an undo, in the order the rollback runs them.
fn undo_order(j: &crate::restore::journal::Journal) -> Vec<&crate::restore::journal::Entry> {
    j.steps
        .iter()
        .rev()
        .filter(|e| !e.undo.is_empty())
        .collect()
}
