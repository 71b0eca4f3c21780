//! HA on the restore side, on the sandbox node: a node whose etcd.yaml names three members
//! is not restored alone (preflight names the other two and nothing changes, dry run
//! included); `--shrink-to-one-member` restores it as a cluster of one, its etcd.yaml
//! rewritten, and a rollback puts the old etcd.yaml back; a snapshot recorded as from a newer
//! etcd minor than the node's (or the local etcd's, for `--to-dir`) is refused before any
//! change, and `--force-version` lets it through.

use std::time::Duration;

use super::{scene, Scene};
use crate::support::forge::{later_id, repack, seal, unpack};
use crate::support::*;

/// Two more members, at peer URLs where nothing listens.
fn others() -> Vec<String> {
    vec![
        format!("cp-2=http://127.0.0.1:{}", free_port()),
        format!("cp-3=http://127.0.0.1:{}", free_port()),
    ]
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
                && line.contains("restore every member's node together")
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

/// The local etcd's `(major, minor)`.
fn local_minor() -> (u64, u64) {
    require("etcd", "etcd-server");
    let out = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .unwrap();
    let text = stdout(&out);
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap()
        .trim()
        .to_string();
    let mut p = v.split('.');
    (
        p.next().unwrap().parse().unwrap(),
        p.next().unwrap().parse().unwrap(),
    )
}

/// `s.reference` re-sealed with its inner and outer manifests saying the snapshot came from
/// etcd `version`: a genuine archive in every other byte, so only the guard can stop it.
fn claiming_version(s: &Scene, version: &str) -> String {
    let (work, mut inner) = unpack(&s.w, &s.reference, "forged");
    let (id, created) = later_id(&s.w, &s.reference, 1);
    inner["etcd"]["version"] = version.into();
    inner["id"] = id.as_str().into();
    inner["created"] = created.as_str().into();
    inner["completed"] = created.as_str().into();
    std::fs::write(
        work.join("manifest.json"),
        serde_json::to_vec(&inner).unwrap(),
    )
    .unwrap();
    let tar = s.w.path("forged.tar");
    repack(&work, &inner, &tar);
    seal(&s.w, &s.reference, &id, &created, &tar, |outer| {
        outer["etcd"]["version"] = version.into();
    })
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client, age, zstd (apt-get install); CI runs it"]
fn a_snapshot_from_a_newer_etcd_minor_is_refused_before_any_change_unless_forced() {
    require("age", "age");
    require("zstd", "zstd");
    let s = scene();
    let (major, minor) = local_minor();
    let newer = format!("{major}.{}.0", minor + 1);
    let forged = claiming_version(&s, &newer);
    let show = s.w.run(&["show", &forged]);
    assert!(
        stdout(&show).contains(&format!("etcd {newer}")),
        "{}",
        stdout(&show)
    );

    // Onto the node, whose etcd.yaml runs an older image.
    let mut args = s.restore_args();
    args[1] = forged.clone();
    let keys_before = s.node.keys();
    let before = s.node.snapshot_tree();
    let out = s.run_args(args.clone(), &["--yes"], &[]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains(&format!("taken from etcd {newer}"))
            && line.contains(&format!("needs etcd {major}.{} or newer", minor + 1))
            && line.contains("is installed (the etcd image in")
            && line.contains("nothing was changed")
            && line.contains("--force-version"),
        "{line}"
    );
    assert_eq!(
        s.node.snapshot_tree(),
        before,
        "a refused restore changed the node"
    );
    assert_eq!(s.node.keys(), keys_before);

    // Into a local dir, where the local etcd would run it.
    let to = s.w.path("local");
    let local = |extra: &[&str]| {
        let mut a = vec![
            "restore",
            forged.as_str(),
            "--allow-unsigned",
            "-i",
            s.w.key.to_str().unwrap(),
            "--to-dir",
            to.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        s.w.run(&a)
    };
    let out = local(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("the local `etcd --version`") && line.contains("--force-version"),
        "{line}"
    );
    assert!(!to.exists(), "refused, yet something was written");
    let out = local(&["--force-version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(to.join("etcd/member").is_dir());

    // Forced onto the node: restored.
    let out = s.run_args(args, &["--yes", "--force-version"], &[]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), s.node.log());
    assert_eq!(s.keys_when_healthy(), s.keys_at_backup);
}
