//! The sandbox node itself: etcd stops and starts with its manifest, a restored data dir
//! serves its snapshot, the tree is stable while etcd runs, crashes restart with back-off,
//! and the manifest command reader takes kubeadm's lists and refuses the rest.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::manifest::parse_command;
use super::tree::{ADMIN_CONF, APISERVER_YAML};
use super::{SandboxNode, ETCD_UID, MEMBER};
use crate::support::stderr;

/// Moves `name` from the manifests dir to the scratch dir (as a restore does) and back.
fn move_manifest(node: &SandboxNode, name: &str, out: bool) {
    let (inside, aside) = (node.manifests_dir().join(name), node.scratch().join(name));
    let (from, to) = if out {
        (inside, aside)
    } else {
        (aside, inside)
    };
    fs::rename(from, to).unwrap();
}

fn stopped(node: &SandboxNode, name: &str) -> bool {
    !node.running().iter().any(|n| n == name)
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn moving_the_etcd_manifest_out_stops_etcd_and_back_starts_it() {
    let node = SandboxNode::start();
    let all = ["etcd.yaml", "kube-apiserver.yaml"];
    assert!(
        node.wait_for(Duration::from_secs(5), |n| n.running() == all),
        "{}",
        node.log()
    );
    node.put("/registry/a", "1");
    assert_eq!(node.get("/registry/a").as_deref(), Some("1"));

    move_manifest(&node, "etcd.yaml", true);
    let t0 = Instant::now();
    let gone = node.wait_for(Duration::from_secs(10), |n| stopped(n, "etcd.yaml"));
    assert!(gone, "etcd still running\n{}", node.log());
    eprintln!("etcd stopped {:?} after its manifest left", t0.elapsed());
    assert!(!node.healthy(), "{}", node.log());
    assert_eq!(node.running(), ["kube-apiserver.yaml"]);

    move_manifest(&node, "etcd.yaml", false);
    assert!(node.wait_healthy(Duration::from_secs(30)), "{}", node.log());
    assert_eq!(node.running(), all);
    assert_eq!(node.get("/registry/a").as_deref(), Some("1"));
    let log = node.log();
    assert!(
        log.contains("etcd.yaml: manifest removed") && log.contains("stopped pid"),
        "{log}"
    );
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_data_dir_restored_from_a_snapshot_serves_the_snapshot() {
    let node = SandboxNode::start();
    node.put("/registry/before", "kept");
    let snap = node.scratch().join("snap.db");
    node.snapshot_save(&snap);
    node.put("/registry/after", "lost");

    // What `cpvault restore` does on a node, by hand.
    move_manifest(&node, "etcd.yaml", true);
    assert!(node.wait_for(Duration::from_secs(10), |n| stopped(n, "etcd.yaml")));
    let data = node.data_dir();
    let (uid, gid) = (
        fs::metadata(&data).unwrap().uid(),
        fs::metadata(&data).unwrap().gid(),
    );
    fs::rename(&data, node.scratch().join("etcd.old")).unwrap();
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", snap.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .args([
            "--name",
            MEMBER,
            "--initial-cluster",
            &node.initial_cluster(),
        ])
        .args(["--initial-advertise-peer-urls", &node.peer_url()])
        .output()
        .unwrap();
    assert!(o.status.success(), "snapshot restore: {}", stderr(&o));
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    move_manifest(&node, "etcd.yaml", false);

    assert!(node.wait_healthy(Duration::from_secs(30)), "{}", node.log());
    assert_eq!(node.keys(), ["/registry/before"]);
    assert_eq!(node.get("/registry/before").as_deref(), Some("kept"));
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn the_tree_is_stable_while_etcd_runs_and_across_a_restart() {
    let node = SandboxNode::start();
    node.put("/registry/a", "1");
    let first = node.snapshot_tree();
    std::thread::sleep(Duration::from_millis(300));
    node.put("/registry/b", "2");
    assert_eq!(first, node.snapshot_tree());

    let find = |rel: &str| first.iter().find(|e| e.0 == rel).cloned().unwrap();
    let admin = find("etc/kubernetes/admin.conf");
    assert_eq!(
        (admin.1, admin.4.as_slice()),
        (0o600, ADMIN_CONF.as_bytes())
    );
    let data = find("var/lib/etcd");
    assert_eq!(data.1, 0o700);
    if fs::metadata(node.scratch()).unwrap().uid() == 0 {
        assert_eq!((data.2, data.3), (ETCD_UID, ETCD_UID));
    }
    let in_data: Vec<_> = first
        .iter()
        .filter(|e| e.0.starts_with("var/lib/etcd/"))
        .collect();
    assert!(
        in_data.iter().any(|e| e.0.ends_with("member/snap/db")),
        "{in_data:?}"
    );
    assert!(in_data.iter().all(|e| e.4.is_empty()));
    assert!(first
        .iter()
        .any(|e| e.0 == "etc/kubernetes/pki/etcd/ca.key" && e.1 == 0o600));
    assert!(!first.iter().any(|e| e.0.ends_with(".log")));

    // A rolled-back restore stops and restarts etcd on its old data dir: same tree.
    move_manifest(&node, "etcd.yaml", true);
    assert!(node.wait_for(Duration::from_secs(10), |n| stopped(n, "etcd.yaml")));
    move_manifest(&node, "etcd.yaml", false);
    assert!(node.wait_healthy(Duration::from_secs(30)), "{}", node.log());
    let same = node.wait_for(Duration::from_secs(2), |n| n.snapshot_tree() == first);
    assert!(same, "{first:?}\n{:?}", node.snapshot_tree());
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_crashing_command_is_restarted_with_back_off() {
    let node = SandboxNode::start();
    let crash = APISERVER_YAML.replace(
        "    - sleep\n    - \"100000\"\n",
        "    - sh\n    - -c\n    - 'echo boom >&2; exit 3'\n",
    );
    fs::write(node.scratch().join("crash.yaml"), crash).unwrap();
    move_manifest(&node, "crash.yaml", false);
    let exits = |n: &SandboxNode| n.log().matches("exit status: 3").count();
    assert!(
        node.wait_for(Duration::from_secs(10), |n| exits(n) >= 4),
        "{}",
        node.log()
    );
    let log = node.log();
    for delay in ["500 ms", "1000 ms", "2000 ms"] {
        assert!(log.contains(&format!("restarting in {delay}")), "{log}");
    }
    assert!(log.contains("    | boom"), "{log}");
    assert_eq!(node.running(), ["etcd.yaml", "kube-apiserver.yaml"]);
}

#[test]
fn the_command_reader_takes_kubeadm_lists_and_refuses_the_rest() {
    let yaml = |items: &str| {
        format!("spec:\n  containers:\n  - name: x\n    command:\n{items}  hostNetwork: true\n")
    };
    let ok = parse_command(&yaml(
        "    - etcd\n    - --name=node1\n    - 'a b'\n    - \"a b\"\n",
    ));
    assert_eq!(ok.unwrap(), ["etcd", "--name=node1", "a b", "a b"]);
    // kubeadm's list items may also be indented below the key.
    assert_eq!(
        parse_command(&yaml("      - sleep\n      - 1\n")).unwrap(),
        ["sleep", "1"]
    );
    for bad in [
        "",
        "    - a: b\n",
        "    - x # c\n",
        "    - \"a\\\"\"\n",
        "    - 'it''s'\n",
        "    - a\n      b\n",
    ] {
        assert!(parse_command(&yaml(bad)).is_err(), "{bad:?}");
    }
    assert!(parse_command("spec:\n  containers:\n  - command: [a, b]\n").is_err());
}
