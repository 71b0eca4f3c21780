//! `restore --rollback RESTORE_ID`: each node's journal read back from it, printed, and
//! (after the user's yes) undone in reverse by the core's rollback — node by node, each
//! undoing only its own steps. Nothing here decides what to undo: the journal says.

use crate::cli::RestoreArgs;
use crate::error::Usage;
use crate::restore::journal::JournalError;
use crate::sources::settings::Sources;
use crate::sources::ssh::Node;

use super::nodes::{connect_all, destinations, layouts};
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
    if !dests.is_empty() {
        layouts(args, dests.len())?;
    }
    let nodes = connect_all(ctx, settings, &dests).await?;
    let layouts = match layouts(args, nodes.len()) {
        Ok(l) => l,
        Err(e) => {
            for node in nodes {
                node.close().await;
            }
            return Err(e.into());
        }
    };
    let mut result = Ok(());
    // `--dry-run --output json`: one object per node, printed together.
    let mut plans = vec![];
    for (node, l) in nodes.iter().zip(&layouts) {
        match rollback_on(ctx, args, node, &l.staging_parent, id).await {
            // Over several nodes, one that never got to a change has no journal.
            Err(e)
                if nodes.len() > 1
                    && matches!(
                        e.downcast_ref::<JournalError>(),
                        Some(JournalError::NotFound { .. })
                    ) =>
            {
                if !ctx.quiet {
                    crate::say!("{}: nothing to undo there", node.destination());
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
            Ok(plan) => plans.extend(plan),
        }
    }
    for node in nodes {
        node.close().await;
    }
    result?;
    match plans.len() {
        0 => Ok(()),
        1 => super::super::print_json(&plans[0]),
        _ => super::super::print_json(&serde_json::Value::Array(plans)),
    }
}

async fn rollback_on(
    ctx: &Ctx,
    args: &RestoreArgs,
    node: &Node,
    staging_parent: &str,
    id: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let journal = crate::restore::journal::read(node, staging_parent, id).await?;
    let path = crate::restore::journal::path(staging_parent, id);
    let dest = node.destination();
    let undo: Vec<_> = journal
        .steps
        .iter()
        .rev()
        .filter(|e| !e.undo.is_empty())
        .collect();
    if args.dry_run && ctx.json() {
        return Ok(Some(serde_json::json!({
            "restore_id": id, "node": dest, "journal": path, "backup": journal.backup,
            "undo": undo,
        })));
    }
    let mut text = format!(
        "roll back restore {id} of {} on {dest} (journal {path}), in this order:\n",
        journal.backup
    );
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
    if args.dry_run {
        return super::super::print_text(text.trim_end()).map(|()| None);
    }
    if !args.yes {
        ask(
            &text,
            &format!("Type 'yes' to roll back restore {id} on {dest}: "),
        )?;
    } else if !ctx.quiet {
        crate::say_raw!("{text}");
    }
    match crate::restore::roll_back_journal(node, &path, &journal).await {
        crate::restore::execute::Rollback::Complete => {
            if !ctx.quiet {
                crate::say!(
                    "rolled back restore {id} on {dest}: the node is as it was before the restore"
                );
            }
            Ok(None)
        }
        stopped => anyhow::bail!("rollback of restore {id} on {dest}: {stopped}"),
    }
}
