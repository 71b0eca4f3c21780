//! The user cluster's kube-apiserver restarted after its etcd is restored (its watch cache may
//! hold revisions newer than the restored etcd's): the step the plan lists, and a restart that
//! fails — the controller never brings the pod back — which leaves the restored etcd serving
//! the backup (no rollback), exits non-zero and says what to run by hand.

use super::{scene, served, NS};
use crate::support::*;

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn the_dry_run_lists_the_apiserver_restart_unless_no_pod_is_named() {
    let s = scene();
    let out = s.restore(&["--dry-run", "--output", "json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(last["name"], "restart-apiserver", "{plan}");
    let script = last["script"].as_str().unwrap();
    assert!(
        script.contains("kubectl -n user1 delete pod kube-apiserver-0"),
        "{script}"
    );
    assert!(last["undo"].is_null(), "{last}");

    let out = s.restore(&["--dry-run", "--apiserver-pod", ""], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(". wait-ready "), "{text}");
    assert!(!text.contains("restart-apiserver"), "{text}");
    assert!(!text.contains("kube-apiserver-0"), "{text}");
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn an_apiserver_that_does_not_come_back_leaves_the_restore_in_place_and_says_what_to_run() {
    let s = scene();
    // Its controller is stuck: the deleted pod is never recreated.
    s.api.hold_controller(NS, "kube-apiserver");
    let out = s.restore(&["--yes", "--wait-timeout", "15"], &[]);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = error_line(&out);
    assert_contains_all(&line, &[
        "step restart-apiserver failed",
        "kube-apiserver-0",
        "NOT rolled back",
        "kubectl -n user1 delete pod kube-apiserver-0 --timeout=15s && kubectl -n user1 wait --for=condition=Ready pod/kube-apiserver-0 --timeout=15s",
    ]);
    assert!(!err.contains("rolling back"), "{err}");
    // The warning, as the step failed, says the same.
    assert!(
        err.contains("could not restart the user cluster's kube-apiserver"),
        "{err}"
    );
    assert_eq!(
        served(&s.endpoint),
        s.at_backup,
        "the restore was undone: not the backed-up keys"
    );
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 1);
    assert!(s.restore_pods().is_empty(), "{:?}", s.restore_pods());
    assert!(s.journal().is_null(), "journal left: {}", s.journal());
    let extras = s.volume_extras();
    assert!(
        extras.len() == 1 && extras[0].starts_with("member.before-cpvault-restore-"),
        "{extras:?}"
    );
    assert!(s.api.pod(NS, "kube-apiserver-0").is_none());
}
