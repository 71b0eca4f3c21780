//! HA on the restore side, on the sandbox node: a node whose etcd.yaml names three members
//! is not restored alone (preflight names the other two and nothing changes, dry run
//! included); `--shrink-to-one-member` restores it as a cluster of one, its etcd.yaml
//! rewritten, and a rollback puts the old etcd.yaml back.

use std::time::Duration;

use super::scene;
use crate::support::*;

/// Two more members, at peer URLs where nothing listens.
fn others() -> Vec<String> {
    vec![
        format!("cp-2=http://127.0.0.1:{}", free_port()),
        format!("cp-3=http://127.0.0.1:{}", free_port()),
    ]
}

fn error_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    err.lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line: {err}"))
        .to_string()
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn one_node_of_three_is_refused_in_preflight_and_shrinking_it_is_explicit_and_undone_on_rollback() {
    let s = scene();
    let three = s.node.name_other_members(&others(), "existing");
    let etcd_yaml = s.node.manifests_dir().join("etcd.yaml");
    let keys_before = s.node.keys();
    let before = s.node.snapshot_tree();

    // Alone, it would split the cluster: refused in preflight, even for a dry run.
    for extra in [&["--yes"][..], &["--dry-run"][..]] {
        let out = s.run(extra, &[]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let line = error_line(&out);
        assert!(
            line.contains("names 3 etcd members")
                && line.contains("while cp-2 and cp-3 still hold the old one")
                && line.contains("nothing was changed")
                && line.contains("not supported yet")
                && line.contains("--to-dir DIR --members")
                && line.contains("--shrink-to-one-member"),
            "{line}"
        );
        assert_eq!(
            s.node.snapshot_tree(),
            before,
            "a refused restore changed the node"
        );
    }

    // The shrink is a step of the plan, with its undo.
    let out = s.run(&["--dry-run", "--shrink-to-one-member"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(plan.contains("shrink-to-one-member"), "{plan}");
    assert!(
        plan.contains(&format!("--initial-cluster={}", s.node.initial_cluster())),
        "{plan}"
    );
    assert_eq!(s.node.snapshot_tree(), before);

    // A failure after the rewrite rolls back: the old etcd.yaml is back, byte for byte.
    let out = s.run(
        &["--yes", "--shrink-to-one-member"],
        &[("CPVAULT_RESTORE_FAIL_AT", "wait-ready")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert_eq!(s.keys_when_healthy(), keys_before);
    assert_eq!(std::fs::read_to_string(&etcd_yaml).unwrap(), three);
    assert_eq!(
        s.node.snapshot_tree(),
        before,
        "the rollback left the node changed"
    );

    // Shrunk for real: one member serving the backup, its etcd.yaml naming it alone.
    let out = s.run(&["--yes", "--shrink-to-one-member"], &[]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), s.node.log());
    assert!(
        stderr(&out).contains("a cluster of one member"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.keys_when_healthy(), s.keys_at_backup);
    let now = std::fs::read_to_string(&etcd_yaml).unwrap();
    assert!(
        now.contains(&format!(
            "- --initial-cluster={}\n",
            s.node.initial_cluster()
        )) && now.contains("- --initial-cluster-state=new\n")
            && !now.contains("cp-2"),
        "{now}"
    );
    // The old one is kept beside the manifests dir (never inside it: the kubelet would run it).
    let kept: Vec<_> = std::fs::read_dir(s.node.root().join("etc/kubernetes"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("etcd.yaml.before-cpvault-restore-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read_to_string(kept[0].path()).unwrap(), three);
    let members = s.node.ctl(&["member", "list"]);
    assert_eq!(stdout(&members).lines().count(), 1, "{}", stdout(&members));
    // Settled before the node is dropped.
    assert!(s.node.wait_healthy(Duration::from_secs(30)));
}
