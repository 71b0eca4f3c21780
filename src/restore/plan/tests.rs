use super::*;

const ETCD_YAML: &str = "spec:\n  containers:\n  - command:\n    - etcd\n    - --advertise-client-urls=https://10.0.0.5:2379\n    - --name=admin-cp-1\n    - --initial-cluster=admin-cp-1=https://10.0.0.5:2380\n    - \"--initial-advertise-peer-urls=https://10.0.0.5:2380\"\n";

#[test]
fn skip_hash_check_reaches_the_node_command_only_when_asked() {
    let m = parse_member(ETCD_YAML).unwrap();
    let mut l = NodeLayout::kubeadm();
    assert!(!restore_command(&l, &m, "s.db", "d").contains("--skip-hash-check"));
    l.skip_hash_check = true;
    let cmd = restore_command(&l, &m, "s.db", "d");
    // Both forms (etcdutl and etcdctl) get it.
    assert_eq!(cmd.matches("--skip-hash-check").count(), 2, "{cmd}");
}

#[test]
fn member_flags_come_from_the_manifest() {
    let m = parse_member(ETCD_YAML).unwrap();
    assert_eq!(m.name, "admin-cp-1");
    assert_eq!(m.initial_cluster, "admin-cp-1=https://10.0.0.5:2380");
    assert_eq!(m.initial_advertise_peer_urls, "https://10.0.0.5:2380");
    let e = parse_member("command:\n- etcd\n").unwrap_err();
    assert!(e.contains("--name="), "{e}");
    let wal = format!("{ETCD_YAML}    - --wal-dir=/var/lib/etcd-wal\n");
    let e = parse_member(&wal).unwrap_err();
    assert!(e.contains("--wal-dir=/var/lib/etcd-wal"), "{e}");
}

#[test]
fn the_plan_never_deletes_what_was_there_and_every_change_has_an_undo() {
    let l = NodeLayout::kubeadm();
    let m = parse_member(ETCD_YAML).unwrap();
    let steps = plan(
        &l,
        &m,
        "cpvault-restore-X",
        "admin.conf",
        &Default::default(),
        NodeId(0),
    );
    let names: Vec<_> = steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(
        names,
        [
            "preflight",
            "verify",
            "stage",
            "stop-control-plane",
            "move-aside",
            "restore-snapshot",
            "pki",
            "start-control-plane",
            "wait-ready",
            "kubeconfig",
            "cleanup"
        ]
    );
    for s in &steps {
        if s.changes_node && !s.kind.best_effort() {
            assert!(!s.undo.is_empty(), "{} has no undo", s.kind);
        }
        // The only removals: the staging dir, and what the restore itself created.
        for part in s.script.split("rm -rf ").skip(1) {
            let target = part.split_whitespace().next().unwrap();
            assert!(
                target.contains("cpvault-restore-X"),
                "{} deletes {target}",
                s.kind
            );
        }
    }
    let aside = &steps[4];
    // member/ moves within the data dir, which may be a mount point and is never moved.
    assert!(aside
        .script
        .contains("mv /var/lib/etcd/member /var/lib/etcd/member.before-cpvault-restore-X"));
    assert!(!aside.script.contains("mv /var/lib/etcd "));
    let restore = &steps[5];
    assert!(restore.script.contains("--name=admin-cp-1"));
    assert!(restore.script.contains("chown -R"));
    assert!(restore.script.contains("then etcdutl snapshot restore"));
    let mut custom = l.clone();
    custom.etcdctl.command = "/opt/etcd/etcdctl".into();
    let s = plan(
        &custom,
        &m,
        "cpvault-restore-X",
        "admin.conf",
        &Default::default(),
        NodeId(0),
    );
    assert!(!s[5].script.contains("etcdutl") && s[5].script.contains("/opt/etcd/etcdctl"));
}

#[test]
fn steps_print_and_serialize_under_their_names_and_carry_their_node() {
    let m = parse_member(ETCD_YAML).unwrap();
    let kit = super::super::kit::KitFiles {
        encryption: Some(("files/kit/encryption/e.yaml".into(), "/etc/e.yaml".into())),
        manifests: vec!["etcd.yaml".into()],
        admin_conf: true,
    };
    let steps = plan(
        &NodeLayout::kubeadm(),
        &m,
        "r1",
        "admin.conf",
        &kit,
        NodeId(2),
    );
    let kinds: Vec<StepKind> = steps.iter().map(|s| s.kind).collect();
    let mut all = StepKind::ALL.to_vec();
    all.retain(|k| !matches!(k, StepKind::ShrinkToOneMember | StepKind::WaitQuorum));
    assert_eq!(kinds, all);
    assert!(steps.iter().all(|s| s.node == NodeId(2)));
    for s in &steps {
        assert_eq!(StepKind::from_name(s.kind.name()), Some(s.kind));
        let v = serde_json::to_value(s).unwrap();
        // The --dry-run JSON: the name, never the node index.
        assert_eq!(v["name"], s.kind.name());
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        let mut want = vec!["changes_node", "does", "name"];
        if !s.script.is_empty() {
            want.push("script");
        }
        if !s.undo.is_empty() {
            want.push("undo");
        }
        want.sort_unstable();
        assert_eq!(keys, want);
    }
    assert_eq!(StepKind::from_name("no-such-step"), None);
}

const HA_YAML: &str = "    command:\n    - etcd\n    - --name=cp-2\n    - --initial-advertise-peer-urls=https://10.0.0.6:2380\n    - \"--initial-cluster=cp-1=https://10.0.0.5:2380,cp-2=https://10.0.0.6:2380,cp-3=https://10.0.0.7:2380\"\n    - --initial-cluster-state=existing\n";

#[test]
fn the_members_of_the_initial_cluster_are_named_once_each() {
    let m = parse_member(HA_YAML).unwrap();
    assert_eq!(m.initial_members(), ["cp-1", "cp-2", "cp-3"]);
    assert_eq!(m.other_members(), ["cp-1", "cp-3"]);
    let mut two_urls = m.clone();
    two_urls.initial_cluster = "x=http://a:1,x=http://b:1".into();
    two_urls.name = "x".into();
    assert!(two_urls.other_members().is_empty());
    two_urls.initial_advertise_peer_urls = "http://a:1,http://b:1".into();
    assert_eq!(
        two_urls.alone().initial_cluster,
        "x=http://a:1,x=http://b:1"
    );
    assert_eq!(m.alone().initial_cluster, "cp-2=https://10.0.0.6:2380");
}

#[test]
fn shrinking_rewrites_the_moved_out_etcd_yaml_and_its_undo_puts_the_old_one_back() {
    let mut l = NodeLayout::kubeadm();
    let m = parse_member(HA_YAML).unwrap();
    // A backup holding the node's static-pod manifests (the kit): its etcd.yaml never
    // reaches the plan, so the shrunk one stays.
    let kit = super::super::kit::KitFiles {
        manifests: vec!["kube-scheduler.yaml".into()],
        ..Default::default()
    };
    let plain = plan(&l, &m, "r1", "admin.conf", &kit, NodeId(0));
    assert!(plain.iter().all(|s| s.kind != StepKind::ShrinkToOneMember));
    l.shrink_to_one_member = true;
    let steps = plan(&l, &m, "r1", "admin.conf", &kit, NodeId(0));
    let names: Vec<_> = steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(
        names[3..6],
        ["stop-control-plane", "shrink-to-one-member", "move-aside"]
    );
    let shrink = &steps[4];
    assert!(
        shrink
            .script
            .contains("/etc/kubernetes/r1.manifests/etcd.yaml"),
        "{}",
        shrink.script
    );
    assert!(
        shrink
            .script
            .contains("/etc/kubernetes/etcd.yaml.before-r1"),
        "{}",
        shrink.script
    );
    assert!(
        shrink.undo.contains(
            "mv /etc/kubernetes/etcd.yaml.before-r1 /etc/kubernetes/r1.manifests/etcd.yaml"
        ),
        "{}",
        shrink.undo
    );
    // snapshot restore makes a cluster of this member alone.
    let restore = steps
        .iter()
        .find(|s| s.kind == StepKind::RestoreSnapshot)
        .unwrap();
    assert!(
        restore
            .script
            .contains("--initial-cluster=cp-2=https://10.0.0.6:2380 "),
        "{}",
        restore.script
    );
    // The rewrite itself, run by sed on a copy of the manifest.
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("etcd.yaml");
    std::fs::write(&yaml, HA_YAML).unwrap();
    let script = shrink_step(
        &NodeLayout {
            manifests_dir: dir.path().join("manifests").display().to_string(),
            ..l.clone()
        },
        &Paths {
            manifests_aside: dir.path().display().to_string(),
            etcd_manifest_before: dir.path().join("old.yaml").display().to_string(),
            ..paths(&l, "r1")
        },
        &m.alone(),
        NodeId(0),
    );
    let run = |s: &str| {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(s)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&script.script);
    let new = std::fs::read_to_string(&yaml).unwrap();
    let reread = parse_member(&new).unwrap();
    assert_eq!(reread.initial_members(), ["cp-2"]);
    assert!(new.contains("- --initial-cluster-state=new\n"), "{new}");
    assert!(
        new.contains("- \"--initial-cluster=cp-2=https://10.0.0.6:2380\"\n"),
        "{new}"
    );
    run(&script.undo);
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), HA_YAML);
    assert!(!dir.path().join("old.yaml").exists());
}

#[test]
fn paths_sit_beside_the_originals() {
    let p = paths(&NodeLayout::kubeadm(), "r1");
    assert_eq!(p.staging, "/var/tmp/r1");
    assert_eq!(p.manifests_aside, "/etc/kubernetes/r1.manifests");
    assert_eq!(p.pki_aside, "/etc/kubernetes/pki.before-r1");
}
