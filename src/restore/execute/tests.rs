//! The runner against a recording fake executor: order, rollback, the journal it records,
//! cancellation and best-effort steps.

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
                (StepKind::RestoreSnapshot, "on node0: unrestore0".into()),
                (StepKind::StopControlPlane, "on node1: start1".into()),
                (StepKind::StopControlPlane, "on node0: start0".into()),
            ],
        }
    );
    assert!(!log(&f).contains(&"undo stop-control-plane@1".to_string()));
    assert!(e.to_string().contains(
        "ROLLBACK STOPPED at restore-snapshot (stuck); nothing after it was undone — run these on the node by hand, in order: [restore-snapshot] on node0: unrestore0 ; [stop-control-plane] on node1: start1 ; [stop-control-plane] on node0: start0"
    ), "{e}");
}

#[tokio::test]
async fn injected_failures_and_ctrl_c_fail_after_the_step_ran() {
    let f = Fake::default();
    let e = go(
        &f,
        RunOptions {
            quiet: true,
            fail_at: Some(StepKind::StopControlPlane.into()),
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
    let j = f.journals.borrow().clone();
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

    let f = Fake {
        fail_run: Some((StepKind::WaitReady, NodeId(0))),
        fail_undo: Some((StepKind::RestoreSnapshot, NodeId(0))),
        ..Fake::default()
    };
    go(&f, quiet()).await.unwrap_err();
    let j = f.journals.borrow().clone();
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
