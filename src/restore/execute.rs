//! The step runner: runs a plan's steps in order on the nodes they name, keeps the journal of
//! what completed — in memory, and through the executor on the node, before and after every
//! step that changes it — and on a failure or a Ctrl-C undoes the journal in reverse. The
//! runner — not a step — owns ordering, cancellation and the journal, so a plan over several
//! nodes ("stop on all, then restore on each") is only a different order of the same steps.
//! What a step does on a node is an [`Executor`]'s business; the runner must never run
//! anything itself, so it is tested with a fake executor.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::plan::{NodeId, Step, StepKind};

/// TEST-ONLY fault-injection hook: the environment variable naming a step that is made to
/// fail right after it ran (`NAME`, on every node; `NAME@N`, on the N-th node only, counted
/// from 1 in `--ssh` order), so the tests can exercise the rollback of every step through the
/// real binary. See [`fail_at_hook`], the one place it is read.
pub const FAIL_AT_ENV: &str = "CPVAULT_RESTORE_FAIL_AT";

/// TEST-ONLY hook: the environment variable naming a step after which the runner waits (its
/// journal written) until it is interrupted, so the tests can kill cpvault at a known point.
/// See [`pause_at_hook`], the one place it is read.
pub const PAUSE_AT_ENV: &str = "CPVAULT_RESTORE_PAUSE_AT";

/// TEST-ONLY fault-injection hook: the step [`FAIL_AT_ENV`] names, if any. Only debug builds
/// (which the integration tests run) read it; a release build never fails a step on purpose.
pub fn fail_at_hook() -> Option<StepAt> {
    step_hook(FAIL_AT_ENV)
}

/// TEST-ONLY hook: the step [`PAUSE_AT_ENV`] names, if any. Only debug builds read it; a
/// release build never waits on purpose.
pub fn pause_at_hook() -> Option<StepAt> {
    step_hook(PAUSE_AT_ENV)
}

fn step_hook(_env: &str) -> Option<StepAt> {
    #[cfg(debug_assertions)]
    {
        std::env::var(_env)
            .ok()
            .and_then(|name| StepAt::parse(&name))
    }
    #[cfg(not(debug_assertions))]
    {
        None
    }
}

/// A step a test hook names: its kind, on one node or (`node: None`) on any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepAt {
    /// The step.
    pub kind: StepKind,
    /// Only on this node.
    pub node: Option<NodeId>,
}

impl StepAt {
    /// `NAME` or `NAME@N` (N counted from 1); `None` for anything else.
    pub fn parse(s: &str) -> Option<StepAt> {
        let (name, node) = match s.split_once('@') {
            Some((name, n)) => {
                let n: usize = n.parse().ok().filter(|n| *n >= 1)?;
                (name, Some(NodeId(n - 1)))
            }
            None => (s, None),
        };
        Some(StepAt {
            kind: StepKind::from_name(name)?,
            node,
        })
    }

    /// Whether `step` is the one named.
    pub fn is(&self, step: &Step) -> bool {
        self.kind == step.kind && self.node.is_none_or(|n| n == step.node)
    }
}

impl From<StepKind> for StepAt {
    fn from(kind: StepKind) -> StepAt {
        StepAt { kind, node: None }
    }
}

/// Undoes steps and keeps the journal that outlives this process: all a rollback needs, so
/// a rollback from a journal read back from the node is the runner's own.
#[allow(async_fn_in_trait)] // awaited in place by the runner; no Send bound wanted
pub trait Undoer {
    /// The node's name for messages (`user@host`).
    fn node_name(&self, node: NodeId) -> String;
    /// Runs `step`'s undo on its node (only called when it has one).
    async fn undo(&self, step: &Step) -> Result<(), String>;
    /// Writes the journal where it outlives this process: `done` in the order they ran, then
    /// `in_flight`, the step about to run.
    async fn record(&self, done: &[&Step], in_flight: Option<&Step>) -> Result<(), String>;
    /// Removes the journal: nothing is left to undo.
    async fn forget(&self) -> Result<(), String>;
}

/// Runs and undoes steps where they belong. Implemented over SSH for real restores and by a
/// recording fake in the tests.
#[allow(async_fn_in_trait)] // awaited in place by the runner; no Send bound wanted
pub trait Executor: Undoer {
    /// Runs `step` on its node.
    async fn run(&self, step: &Step) -> Result<(), String>;
    /// Drops what the failed `step` produced on this machine, before the rollback.
    fn discard(&self, step: &Step);
    /// The warning for a best-effort step that failed with `error`.
    fn warning(&self, step: &Step, error: &str) -> String;
}

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No progress lines.
    pub quiet: bool,
    /// Fail this step after it ran ([`fail_at_hook`]; tests only).
    pub fail_at: Option<StepAt>,
    /// Wait after this step until interrupted ([`pause_at_hook`]; tests only).
    pub pause_at: Option<StepAt>,
}

/// A run that went to the end without a rollback.
#[derive(Debug)]
pub struct Completed<'p> {
    /// The steps that completed, in order.
    pub journal: Vec<&'p Step>,
    /// Best-effort steps that failed although their failure fails the run
    /// ([`StepKind::fails_the_run`]), with why; nothing was rolled back for them.
    pub failed: Vec<(StepKind, String)>,
}

/// How the rollback went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// Every completed step was undone.
    Complete,
    /// An undo failed; the rest was left for the operator.
    Stopped {
        /// The step whose undo failed.
        at: StepKind,
        /// Why.
        failure: String,
        /// What is left to run by hand, in order: the step and its undo script.
        left: Vec<(StepKind, String)>,
    },
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rollback::Complete => {
                f.write_str("rolled back: everything the restore changed is as it was before")
            }
            Rollback::Stopped { at, failure, left } => {
                let left: Vec<String> = left
                    .iter()
                    .map(|(k, undo)| format!("[{k}] {undo}"))
                    .collect();
                write!(
                    f,
                    "ROLLBACK STOPPED at {at} ({failure}); nothing after it was undone — run these on the node by hand, in order: {}",
                    left.join(" ; ")
                )
            }
        }
    }
}

/// A step failed (or was interrupted); the completed steps were rolled back as far as
/// [`StepFailed::rollback`] says.
#[derive(Debug, thiserror::Error)]
#[error("restore step {step} failed on {node}: {cause}; {rollback}")]
pub struct StepFailed {
    /// The step.
    pub step: StepKind,
    /// The node it ran on.
    pub node: String,
    /// Why it failed.
    pub cause: String,
    /// What the rollback did.
    pub rollback: Rollback,
}

/// Runs `steps` in order — all but the checks done before any change
/// ([`StepKind::checked_before_changes`]) — and returns the journal of completed steps. Before
/// and after each step with an undo, the journal goes to [`Undoer::record`]; once the last
/// step ran it is [forgotten](Undoer::forget). A cancelled `cancel` lets the step in flight
/// finish, then fails it like any error: stopping halfway would leave the control plane down
/// and the CA keys staged.
///
/// # Errors
/// [`StepFailed`] for the first step that fails; the journal (the failed step included: it may
/// have changed something before failing) is undone in reverse first. A best-effort step
/// ([`StepKind::best_effort`]) only prints a warning, and is listed in
/// [`Completed::failed`] when its failure fails the run.
pub async fn run<'p, E: Executor>(
    exec: &E,
    steps: &'p [Step],
    opts: &RunOptions,
    cancel: &CancellationToken,
) -> Result<Completed<'p>, StepFailed> {
    let runnable: Vec<&Step> = steps
        .iter()
        .filter(|s| !s.kind.checked_before_changes())
        .collect();
    let several = runnable.iter().any(|s| s.node != runnable[0].node);
    let mut journal: Vec<&Step> = vec![];
    let mut failed = vec![];
    for (i, step) in runnable.iter().copied().enumerate() {
        if !opts.quiet {
            let on = if several {
                format!(" on {}", exec.node_name(step.node))
            } else {
                String::new()
            };
            crate::say!(
                "[{}/{}] {}{on}: {}",
                i + 1,
                runnable.len(),
                step.kind,
                step.does
            );
        }
        // Interrupted between steps (or while paused): the next one never starts.
        if cancel.is_cancelled() && !step.kind.best_effort() {
            let rollback = roll_back(exec, &journal).await;
            return Err(StepFailed {
                step: step.kind,
                node: exec.node_name(step.node),
                cause: "interrupted (Ctrl-C, SIGTERM or SIGHUP) before it started".into(),
                rollback,
            });
        }
        let journaled = !step.undo.is_empty();
        if journaled {
            // Without a journal on the node a killed cpvault could not be undone: not started.
            if let Err(e) = exec.record(&journal, Some(step)).await {
                let rollback = roll_back(exec, &journal).await;
                return Err(StepFailed {
                    step: step.kind,
                    node: exec.node_name(step.node),
                    cause: format!("writing the journal before it: {e}"),
                    rollback,
                });
            }
        }
        let mut r = exec.run(step).await;
        if r.is_ok() && opts.fail_at.is_some_and(|at| at.is(step)) {
            r = Err(format!("injected failure ({FAIL_AT_ENV})"));
        }
        if r.is_ok() && !step.kind.best_effort() && cancel.is_cancelled() {
            r = Err("interrupted (Ctrl-C)".into());
        }
        if r.is_ok() && journaled {
            let mut done = journal.clone();
            done.push(step);
            if let Err(e) = exec.record(&done, None).await {
                r = Err(format!("writing the journal after it: {e}"));
            }
        }
        match r {
            Ok(()) => {
                journal.push(step);
                if opts.pause_at.is_some_and(|at| at.is(step)) {
                    pause(step.kind, cancel).await;
                }
            }
            Err(e) if step.kind.best_effort() => {
                crate::say!("warning: {}", exec.warning(step, &e));
                if step.kind.fails_the_run() {
                    exec.discard(step);
                    failed.push((step.kind, e));
                }
            }
            Err(cause) => {
                journal.push(step);
                exec.discard(step);
                let rollback = roll_back(exec, &journal).await;
                return Err(StepFailed {
                    step: step.kind,
                    node: exec.node_name(step.node),
                    cause,
                    rollback,
                });
            }
        }
    }
    if let Err(e) = exec.forget().await {
        crate::say!("warning: could not remove the restore journal ({e}); the restore itself is complete, remove it by hand");
    }
    Ok(Completed { journal, failed })
}

/// The [`PAUSE_AT_ENV`] test hook: waits until interrupted (or an hour), so a test can kill
/// cpvault with a known journal on the node.
async fn pause(after: StepKind, cancel: &CancellationToken) {
    crate::say!("paused after {after} ({PAUSE_AT_ENV})");
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
}

/// Undoes `journal` in reverse, stopping at the first undo that fails (later undos assume the
/// earlier ones worked: moving the old data dir back while etcd still runs on the new one
/// would be worse than stopping). After each undo the journal is recorded without it, so an
/// interrupted rollback resumes where it stopped; once all are undone it is forgotten.
pub async fn roll_back<U: Undoer>(exec: &U, journal: &[&Step]) -> Rollback {
    let pending: Vec<(usize, &Step)> = journal
        .iter()
        .copied()
        .enumerate()
        .rev()
        .filter(|(_, s)| !s.undo.is_empty())
        .collect();
    let several = pending.iter().any(|(_, s)| s.node != pending[0].1.node);
    for (i, (at, step)) in pending.iter().enumerate() {
        if several {
            crate::say!(
                "rolling back {} on {}",
                step.kind,
                exec.node_name(step.node)
            );
        } else {
            crate::say!("rolling back {}", step.kind);
        }
        if let Err(failure) = exec.undo(step).await {
            return Rollback::Stopped {
                at: step.kind,
                failure,
                left: pending[i..]
                    .iter()
                    .map(|(_, s)| {
                        // Over several nodes, each undo says where it is to run.
                        let undo = if several {
                            format!("on {}: {}", exec.node_name(s.node), s.undo)
                        } else {
                            s.undo.clone()
                        };
                        (s.kind, undo)
                    })
                    .collect(),
            };
        }
        if i + 1 < pending.len() {
            if let Err(e) = exec.record(&journal[..*at], None).await {
                crate::say!("warning: could not update the restore journal ({e})");
            }
        }
    }
    if let Err(e) = exec.forget().await {
        crate::say!("warning: could not remove the restore journal ({e}); the rollback itself is complete, remove it by hand");
    }
    Rollback::Complete
}

#[cfg(test)]
mod tests;
