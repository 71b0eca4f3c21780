//! What `restore` shows before it changes anything: the plan (`--dry-run`, as text or JSON,
//! and before the question), each step with the node it runs on when there are several, and
//! the question itself. Rendering only.

use std::io::{self, IsTerminal, Write};

use crate::archive::manifest::Manifest;
use crate::error::Usage;
use crate::restore::plan::Step;
use crate::restore::Prepared;

use super::Ctx;

/// The nodes of a plan: each one's destination and the etcd member it runs.
pub(super) struct Nodes<'a> {
    /// `user@host` of each node, in `--ssh` order.
    pub dests: &'a [String],
    /// What preflight learned of each.
    pub prepared: &'a Prepared,
}

impl Nodes<'_> {
    fn several(&self) -> bool {
        self.dests.len() > 1
    }

    /// `user@host`, or for several nodes `3 nodes (user@a: member x, …)`.
    pub fn describe(&self) -> String {
        if !self.several() {
            return self.dests.join(", ");
        }
        let each: Vec<String> = self
            .dests
            .iter()
            .zip(&self.prepared.facts)
            .map(|(d, f)| format!("{d}: member {}", f.member.name))
            .collect();
        format!("{} nodes ({})", self.dests.len(), each.join(", "))
    }
}

pub(super) fn print_plan(ctx: &Ctx, m: &Manifest, nodes: &Nodes) -> anyhow::Result<()> {
    let p = nodes.prepared;
    if ctx.json() {
        if !nodes.several() {
            return super::super::print_json(&serde_json::json!({
                "backup": m.reference(), "node": nodes.dests.join(", "),
                "restore_id": p.restore_id, "steps": p.steps,
            }));
        }
        let steps: Vec<serde_json::Value> = p
            .steps
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).expect("a step serializes");
                v["node"] = nodes.dests[s.node.0].clone().into();
                v
            })
            .collect();
        let each: Vec<serde_json::Value> = nodes
            .dests
            .iter()
            .zip(&p.facts)
            .map(|(d, f)| serde_json::json!({"node": d, "member": f.member.name}))
            .collect();
        return super::super::print_json(&serde_json::json!({
            "backup": m.reference(), "node": nodes.dests.join(", "), "nodes": each,
            "restore_id": p.restore_id, "steps": steps,
        }));
    }
    super::super::print_text(&render_plan(m, nodes))
}

fn render_plan(m: &Manifest, nodes: &Nodes) -> String {
    let mut t = format!("restore {} onto {}:\n", m.reference(), nodes.describe());
    for (i, s) in nodes.prepared.steps.iter().enumerate() {
        let on = if nodes.several() {
            format!(" on {}", nodes.dests[s.node.0])
        } else {
            String::new()
        };
        t.push_str(&format!(
            "{:>2}. {:<20} {}{on}\n",
            i + 1,
            s.kind.name(),
            s.does
        ));
        push_commands(&mut t, s);
    }
    t
}

fn push_commands(t: &mut String, s: &Step) {
    if !s.script.is_empty() {
        t.push_str(&format!("      run:  {}\n", s.script));
    }
    if !s.undo.is_empty() {
        t.push_str(&format!("      undo: {}\n", s.undo));
    }
}

/// The plan of a restore onto one destination that is not a node (a user cluster's etcd).
pub(super) fn print_steps(
    ctx: &Ctx,
    m: &Manifest,
    dest: &str,
    restore_id: &str,
    steps: &[Step],
) -> anyhow::Result<()> {
    if ctx.json() {
        return super::super::print_json(&serde_json::json!({
            "backup": m.reference(), "node": dest, "restore_id": restore_id, "steps": steps,
        }));
    }
    super::super::print_text(&render_steps(m, dest, steps))
}

fn render_steps(m: &Manifest, dest: &str, steps: &[Step]) -> String {
    let mut t = format!("restore {} onto {dest}:\n", m.reference());
    for (i, s) in steps.iter().enumerate() {
        t.push_str(&format!("{:>2}. {:<20} {}\n", i + 1, s.kind.name(), s.does));
        push_commands(&mut t, s);
    }
    t
}

/// [`confirm`] for [`print_steps`]' plans.
pub(super) fn confirm_steps(m: &Manifest, dest: &str, steps: &[Step]) -> anyhow::Result<()> {
    ask(
        &render_steps(m, dest, steps),
        &format!("Type 'yes' to restore onto {dest}: "),
    )
}

pub(super) fn confirm(m: &Manifest, nodes: &Nodes) -> anyhow::Result<()> {
    ask(
        &render_plan(m, nodes),
        &format!("Type 'yes' to restore onto {}: ", nodes.dests.join(", ")),
    )
}

/// Shows `what` and asks `question` on the terminal.
pub(super) fn ask(what: &str, question: &str) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() {
        return Err(Usage(
            "restore changes the node and asks first; stdin is not a terminal, so pass --yes (review the plan with --dry-run)".into(),
        )
        .into());
    }
    crate::say_raw!("{what}");
    crate::say_raw!("{question}");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}
