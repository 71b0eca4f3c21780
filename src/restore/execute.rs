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
/// fail right after it ran, so the tests can exercise the rollback of every step through the
/// real binary. See [`fail_at_hook`], the one place it is read.
pub const FAIL_AT_ENV: &str = "CPVAULT_RESTORE_FAIL_AT";

/// TEST-ONLY hook: the environment variable naming a step after which the runner waits (its
/// journal written) until it is interrupted, so the tests can kill cpvault at a known point.
/// See [`pause_at_hook`], the one place it is read.
pub const PAUSE_AT_ENV: &str = "CPVAULT_RESTORE_PAUSE_AT";

/// TEST-ONLY fault-injection hook: the step [`FAIL_AT_ENV`] names, if any. Only debug builds
/// (which the integration tests run) read it; a release build never fails a step on purpose.
pub fn fail_at_hook() -> Option<StepKind> {
    step_hook(FAIL_AT_ENV)
}

/// TEST-ONLY hook: the step [`PAUSE_AT_ENV`] names, if any. Only debug builds read it; a
/// release build never waits on purpose.
pub fn pause_at_hook() -> Option<StepKind> {
    step_hook(PAUSE_AT_ENV)
}

fn step_hook(_env: &str) -> Option<StepKind> {
    #[cfg(debug_assertions)]
    {
        std::env::var(_env)
            .ok()
            .and_then(|name| StepKind::from_name(&name))
    }
    #[cfg(not(debug_assertions))]
    {
        None
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
    pub fail_at: Option<StepKind>,
    /// Wait after this step until interrupted ([`pause_at_hook`]; tests only).
    pub pause_at: Option<StepKind>,
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
                f.write_str("rolled back: the node is as it was before the restore")
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
    let mut journal: Vec<&Step> = vec![];
    let mut failed = vec![];
    for (i, step) in runnable.iter().copied().enumerate() {
        if !opts.quiet {
            eprintln!(
                "[{}/{}] {}: {}",
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
        if r.is_ok() && opts.fail_at == Some(step.kind) {
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
                if opts.pause_at == Some(step.kind) {
                    pause(step.kind, cancel).await;
                }
            }
            Err(e) if step.kind.best_effort() => {
                eprintln!("warning: {}", exec.warning(step, &e));
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
        eprintln!("warning: could not remove the restore journal ({e}); the restore itself is complete, remove it by hand");
    }
    Ok(Completed { journal, failed })
}

/// The [`PAUSE_AT_ENV`] test hook: waits until interrupted (or an hour), so a test can kill
/// cpvault with a known journal on the node.
async fn pause(after: StepKind, cancel: &CancellationToken) {
    eprintln!("paused after {after} ({PAUSE_AT_ENV})");
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
    for (i, (at, step)) in pending.iter().enumerate() {
        eprintln!("rolling back {}", step.kind);
        if let Err(failure) = exec.undo(step).await {
            return Rollback::Stopped {
                at: step.kind,
                failure,
                left: pending[i..]
                    .iter()
                    .map(|(_, s)| (s.kind, s.undo.clone()))
                    .collect(),
            };
        }
        if i + 1 < pending.len() {
            if let Err(e) = exec.record(&journal[..*at], None).await {
                eprintln!("warning: could not update the restore journal ({e})");
            }
        }
    }
    if let Err(e) = exec.forget().await {
        eprintln!("warning: could not remove the restore journal ({e}); the rollback itself is complete, remove it by hand");
    }
    Rollback::Complete
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records what ran where; fails the steps it is told to.
    #[derive(Default)]
    struct Fake {
        log: RefCell<Vec<String>>,
        fail_run: Option<(StepKind, NodeId)>,
        fail_undo: Option<(StepKind, NodeId)>,
        cancel_after: Option<(StepKind, CancellationToken)>,
        /// Every journal recorded (`*` marks the step in flight); `forget` records "gone".
        journals: RefCell<Vec<String>>,
    }

    impl Undoer for Fake {
        fn node_name(&self, node: NodeId) -> String {
            format!("node{}", node.0)
        }
        async fn undo(&self, step: &Step) -> Result<(), String> {
            self.log
                .borrow_mut()
                .push(format!("undo {}@{}", step.kind, step.node.0));
            match self.fail_undo {
                Some(f) if f == (step.kind, step.node) => Err("stuck".into()),
                _ => Ok(()),
            }
        }
        async fn record(&self, done: &[&Step], in_flight: Option<&Step>) -> Result<(), String> {
            let mut names: Vec<String> = done
                .iter()
                .map(|s| format!("{}@{}", s.kind, s.node.0))
                .collect();
            names.extend(in_flight.map(|s| format!("*{}@{}", s.kind, s.node.0)));
            self.journals.borrow_mut().push(names.join(" "));
            Ok(())
        }
        async fn forget(&self) -> Result<(), String> {
            self.journals.borrow_mut().push("gone".into());
            Ok(())
        }
    }

    impl Executor for Fake {
        async fn run(&self, step: &Step) -> Result<(), String> {
            self.log
                .borrow_mut()
                .push(format!("run {}@{}", step.kind, step.node.0));
            if let Some((k, t)) = &self.cancel_after {
                if *k == step.kind {
                    t.cancel();
                }
            }
            match self.fail_run {
                Some(f) if f == (step.kind, step.node) => Err("boom".into()),
                _ => Ok(()),
            }
        }
        fn discard(&self, step: &Step) {
            self.log
                .borrow_mut()
                .push(format!("discard {}@{}", step.kind, step.node.0));
        }
        fn warning(&self, step: &Step, error: &str) -> String {
            format!("{} left behind ({error})", step.kind)
        }
    }

    fn step(kind: StepKind, node: usize, undo: &str) -> Step {
        Step {
            kind,
            node: NodeId(node),
            does: kind.name().into(),
            changes_node: !undo.is_empty(),
            script: format!("do {kind}"),
            undo: undo.into(),
        }
    }

    /// Two nodes, ordered as an HA restore would be: stop on all, then restore on each.
    fn two_nodes() -> Vec<Step> {
        use StepKind::*;
        vec![
            step(Preflight, 0, ""),
            step(StopControlPlane, 0, "start0"),
            step(StopControlPlane, 1, "start1"),
            step(RestoreSnapshot, 0, "unrestore0"),
            step(RestoreSnapshot, 1, "unrestore1"),
            step(WaitReady, 0, ""),
            step(Cleanup, 0, ""),
        ]
    }

    async fn go(fake: &Fake, opts: RunOptions) -> Result<Vec<String>, StepFailed> {
        let steps = two_nodes();
        let cancel = fake
            .cancel_after
            .as_ref()
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        let journal = run(fake, &steps, &opts, &cancel).await?.journal;
        Ok(journal
            .iter()
            .map(|s| format!("{}@{}", s.kind, s.node.0))
            .collect())
    }

    fn log(f: &Fake) -> Vec<String> {
        f.log.borrow().clone()
    }

    #[tokio::test]
    async fn steps_run_in_plan_order_on_their_nodes_and_checks_are_skipped() {
        let f = Fake::default();
        let journal = go(
            &f,
            RunOptions {
                quiet: true,
                fail_at: None,
                pause_at: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            journal,
            [
                "stop-control-plane@0",
                "stop-control-plane@1",
                "restore-snapshot@0",
                "restore-snapshot@1",
                "wait-ready@0",
                "cleanup@0"
            ]
        );
        assert!(log(&f).iter().all(|l| l.starts_with("run ")));
    }

    #[tokio::test]
    async fn a_failure_undoes_the_journal_in_reverse_across_nodes_failed_step_included() {
        let f = Fake {
            fail_run: Some((StepKind::RestoreSnapshot, NodeId(1))),
            ..Fake::default()
        };
        let e = go(
            &f,
            RunOptions {
                quiet: true,
                fail_at: None,
                pause_at: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.step, e.node.as_str(), e.cause.as_str()),
            (StepKind::RestoreSnapshot, "node1", "boom")
        );
        assert_eq!(e.rollback, Rollback::Complete);
        assert_eq!(
            log(&f)[4..],
            [
                "discard restore-snapshot@1",
                "undo restore-snapshot@1",
                "undo restore-snapshot@0",
                "undo stop-control-plane@1",
                "undo stop-control-plane@0"
            ]
        );
        assert!(
            e.to_string()
                .starts_with("restore step restore-snapshot failed on node1: boom; rolled back"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failed_undo_stops_the_rollback_and_lists_what_is_left_in_order() {
        let f = Fake {
            fail_run: Some((StepKind::WaitReady, NodeId(0))),
            fail_undo: Some((StepKind::RestoreSnapshot, NodeId(0))),
            ..Fake::default()
        };
        let e = go(
            &f,
            RunOptions {
                quiet: true,
                fail_at: None,
                pause_at: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.rollback,
            Rollback::Stopped {
                at: StepKind::RestoreSnapshot,
                failure: "stuck".into(),
                left: vec![
                    (StepKind::RestoreSnapshot, "unrestore0".into()),
                    (StepKind::StopControlPlane, "start1".into()),
                    (StepKind::StopControlPlane, "start0".into()),
                ],
            }
        );
        assert!(!log(&f).contains(&"undo stop-control-plane@1".to_string()));
        assert!(e.to_string().contains(
            "ROLLBACK STOPPED at restore-snapshot (stuck); nothing after it was undone — run these on the node by hand, in order: [restore-snapshot] unrestore0 ; [stop-control-plane] start1 ; [stop-control-plane] start0"
        ), "{e}");
    }

    #[tokio::test]
    async fn injected_failures_and_ctrl_c_fail_after_the_step_ran() {
        let f = Fake::default();
        let e = go(
            &f,
            RunOptions {
                quiet: true,
                fail_at: Some(StepKind::StopControlPlane),
                pause_at: None,
            },
        )
        .await
        .unwrap_err();
        // Node 0's step ran, then failed: it is undone, and nothing else ran.
        assert_eq!(e.node, "node0");
        assert!(e.cause.contains(FAIL_AT_ENV), "{}", e.cause);
        assert_eq!(
            log(&f),
            [
                "run stop-control-plane@0",
                "discard stop-control-plane@0",
                "undo stop-control-plane@0"
            ]
        );

        let f = Fake {
            cancel_after: Some((StepKind::RestoreSnapshot, CancellationToken::new())),
            ..Fake::default()
        };
        let e = go(
            &f,
            RunOptions {
                quiet: true,
                fail_at: None,
                pause_at: None,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            (e.step, e.node.as_str()),
            (StepKind::RestoreSnapshot, "node0")
        );
        assert_eq!(e.cause, "interrupted (Ctrl-C)");
        assert_eq!(e.rollback, Rollback::Complete);
    }

    #[tokio::test]
    async fn a_best_effort_step_that_fails_only_warns() {
        let f = Fake {
            fail_run: Some((StepKind::Cleanup, NodeId(0))),
            ..Fake::default()
        };
        let journal = go(
            &f,
            RunOptions {
                quiet: true,
                fail_at: None,
                pause_at: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(journal.last().unwrap(), "wait-ready@0");
        assert!(!log(&f).iter().any(|l| l.starts_with("undo")));
    }

    fn quiet() -> RunOptions {
        RunOptions {
            quiet: true,
            ..RunOptions::default()
        }
    }

    #[tokio::test]
    async fn the_journal_is_recorded_before_and_after_each_changing_step_then_forgotten() {
        let f = Fake::default();
        go(&f, quiet()).await.unwrap();
        assert_eq!(
            *f.journals.borrow(),
            [
                "*stop-control-plane@0",
                "stop-control-plane@0",
                "stop-control-plane@0 *stop-control-plane@1",
                "stop-control-plane@0 stop-control-plane@1",
                "stop-control-plane@0 stop-control-plane@1 *restore-snapshot@0",
                "stop-control-plane@0 stop-control-plane@1 restore-snapshot@0",
                "stop-control-plane@0 stop-control-plane@1 restore-snapshot@0 *restore-snapshot@1",
                "stop-control-plane@0 stop-control-plane@1 restore-snapshot@0 restore-snapshot@1",
                "gone",
            ]
        );
    }

    #[tokio::test]
    async fn a_rollback_shrinks_the_journal_after_each_undo_and_forgets_it_only_when_complete() {
        let f = Fake {
            fail_run: Some((StepKind::RestoreSnapshot, NodeId(1))),
            ..Fake::default()
        };
        go(&f, quiet()).await.unwrap_err();
        let j = f.journals.borrow();
        // In flight when it failed; then one undo at a time.
        assert_eq!(
            j[j.len() - 4..],
            [
                "stop-control-plane@0 stop-control-plane@1 restore-snapshot@0",
                "stop-control-plane@0 stop-control-plane@1",
                "stop-control-plane@0",
                "gone",
            ]
        );
        drop(j);

        let f = Fake {
            fail_run: Some((StepKind::WaitReady, NodeId(0))),
            fail_undo: Some((StepKind::RestoreSnapshot, NodeId(0))),
            ..Fake::default()
        };
        go(&f, quiet()).await.unwrap_err();
        let j = f.journals.borrow();
        assert_ne!(j.last().unwrap(), "gone", "{j:?}");
        assert_eq!(
            j.last().unwrap(),
            "stop-control-plane@0 stop-control-plane@1 restore-snapshot@0"
        );
    }

    #[tokio::test]
    async fn a_failed_kubeconfig_fails_the_run_without_rolling_back_and_cleanup_still_runs() {
        use StepKind::*;
        let steps = vec![
            step(StopControlPlane, 0, "start0"),
            step(WaitReady, 0, ""),
            step(Kubeconfig, 0, ""),
            step(Cleanup, 0, ""),
        ];
        let f = Fake {
            fail_run: Some((Kubeconfig, NodeId(0))),
            ..Fake::default()
        };
        let done = run(&f, &steps, &quiet(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(done.failed, [(Kubeconfig, "boom".to_string())]);
        assert_eq!(
            log(&f),
            [
                "run stop-control-plane@0",
                "run wait-ready@0",
                "run kubeconfig@0",
                "discard kubeconfig@0",
                "run cleanup@0"
            ]
        );
        assert_eq!(f.journals.borrow().last().unwrap(), "gone");
        // A failed cleanup only warns.
        let f = Fake {
            fail_run: Some((Cleanup, NodeId(0))),
            ..Fake::default()
        };
        let done = run(&f, &steps, &quiet(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(done.failed.is_empty());
    }
}
