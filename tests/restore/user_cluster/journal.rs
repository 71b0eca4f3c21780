//! The user-cluster restore's journal on the StatefulSet: a restore killed (SIGKILL) after
//! the swap is undone by `restore --rollback ID --profile gke-user` from the annotation alone —
//! replicas back, restore pod gone, the old data in place, the journal removed.

use super::{scene, served, NS};
use crate::support::*;

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_killed_user_cluster_restore_is_undone_from_its_journal_on_the_statefulset() {
    let s = scene();
    let args = s.args(&[&s.reference, "--allow-unsigned", "--yes"]);
    let mut p = start_paused(
        cpvault_cmd(s.w.dir.path()).args(&args),
        "swap-data-dir",
        String::new,
    );
    p.kill();
    let (id, seen) = (p.id, p.seen);
    // Killed with etcd scaled down, the restore pod up and the data swapped.
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 0);
    assert_eq!(s.restore_pods().len(), 1);
    let journal = s.api.statefulset(NS, "kube-etcd")["metadata"]["annotations"]
        ["cpvault.io/restore-journal"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| panic!("no journal:\n{seen}"));
    let journal: serde_json::Value = serde_json::from_str(&journal).unwrap();
    assert_eq!(journal["replicas"], 1, "{journal}");
    let names: Vec<&str> = journal["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "scale-down",
            "restore-pod",
            "stage",
            "restore-snapshot",
            "swap-data-dir"
        ]
    );

    // A new restore now would overwrite that journal or start etcd on the half-done data:
    // refused before any change, naming the rollback.
    let next = cpvault_cmd(s.w.dir.path()).args(&args).output().unwrap();
    assert_no_panic(&next);
    assert_eq!(next.status.code(), Some(1), "{}", stderr(&next));
    assert!(
        stderr(&next).contains(&format!("cpvault restore --rollback {id} ")),
        "{}",
        stderr(&next)
    );
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 0);
    assert_eq!(s.restore_pods().len(), 1);

    let rb = s.args(&["--rollback", &id]);
    let dry = cpvault_cmd(s.w.dir.path())
        .args(&rb)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = stdout(&dry);
    assert!(
        plan.find("undo swap-data-dir").unwrap() < plan.find("undo scale-down").unwrap(),
        "{plan}"
    );
    let out = cpvault_cmd(s.w.dir.path())
        .args(&rb)
        .arg("--yes")
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.api.replicas(NS, "kube-etcd"), 1);
    assert!(s.restore_pods().is_empty(), "{:?}", s.restore_pods());
    assert_eq!(s.volume_extras(), Vec::<String>::new());
    assert_eq!(served(&s.endpoint), s.changed);
    assert!(s.journal().is_null(), "{}", s.journal());
    // Gone with the journal: a second rollback names what it looked for.
    let again = cpvault_cmd(s.w.dir.path())
        .args(&rb)
        .arg("--yes")
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("cpvault.io/restore-journal"),
        "{}",
        stderr(&again)
    );
}
