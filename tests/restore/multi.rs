//! Restore onto every member of an HA control plane: three sandbox nodes whose kubelets run a
//! real 3-member etcd, reached through one real sshd (a root per node, so the node flags are
//! given once per `--ssh`). Restored onto all three in one plan, they form one healthy cluster
//! with one leader, the three original members, and exactly the keys of backup time; a
//! failure on one node at a middle step rolls every node back to its before-tree and the old
//! cluster serves its keys again; a restore killed mid-way leaves each node a journal of its
//! own steps, which `--rollback` undoes node by node; two nodes of three are refused in
//! preflight, naming the third, and a dry run shows the plan per node, also over the
//! control-plane nodes found through the admin cluster's API — neither changes anything.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use crate::support::node::SandboxNode;
use crate::support::sshd::Sshd;
use crate::support::*;

const KEYS: usize = 10;

/// A node's tree ([`SandboxNode::snapshot_tree`]).
type Tree = Vec<(String, u32, u32, u32, Vec<u8>)>;

struct Scene {
    w: World,
    nodes: Vec<SandboxNode>,
    sshd: Sshd,
    reference: String,
    keys_at_backup: Vec<String>,
}

/// Three members with keys, backed up over gRPC from all three endpoints (with the PKI,
/// the same on every node), then changed: one more key.
fn scene() -> Scene {
    // The stopped-check is `! pgrep …`: without pgrep it would pass at once.
    require("pgrep", "procps");
    let w = World::new();
    let nodes = SandboxNode::start_cluster(3);
    let sshd = Sshd::start();
    for i in 0..KEYS {
        nodes[i % 3].put(
            &format!("/registry/pods/default/p-{i:02}"),
            &format!("v{i}"),
        );
    }
    let keys_at_backup = nodes[0].keys();
    let mut args: Vec<String> = vec![];
    for n in &nodes {
        args.extend(["--etcd-endpoint".to_string(), n.client_url()]);
    }
    args.extend(["--pki-dir".into(), nodes[0].pki_dir().display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference = w.backup(&refs);
    nodes[1].put("/registry/pods/default/late", "after the backup");
    Scene {
        w,
        nodes,
        sshd,
        reference,
        keys_at_backup,
    }
}

impl Scene {
    fn staging(&self, i: usize) -> PathBuf {
        let p = self.w.path(&format!("staging-{i}"));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `restore` onto the nodes `on` (indexes), each with its own node flags, in that order.
    fn run_on(&self, on: &[usize], extra: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_args(self.args_on(on), extra, env)
    }

    fn run_args(&self, mut a: Vec<String>, extra: &[&str], env: &[(&str, &str)]) -> Output {
        a.extend(extra.iter().map(|s| s.to_string()));
        cpvault_cmd(self.w.dir.path())
            .envs(env.iter().copied())
            .args(&a)
            .output()
            .unwrap()
    }

    /// `restore REF` onto the nodes `on`, each with its own node flags, in that order.
    fn args_on(&self, on: &[usize]) -> Vec<String> {
        let mut a: Vec<String> = [
            "restore",
            &self.reference,
            "--allow-unsigned",
            "-i",
            self.w.key.to_str().unwrap(),
            "--ssh-port",
            &self.sshd.port().to_string(),
            "--ssh-key",
            self.sshd.client_key().to_str().unwrap(),
            "--ssh-known-hosts",
            self.sshd.known_hosts().to_str().unwrap(),
            "--node-etcd-endpoint",
            &self.nodes[on[0]].client_url(),
            "--node-etcd-cacert",
            "",
            "--node-etcd-cert",
            "",
            "--node-etcd-key",
            "",
            "--wait-timeout",
            "60",
            "--kubeconfig-out",
            self.w.path("admin.conf").to_str().unwrap(),
            "--store",
            self.w.store.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        for (k, &i) in on.iter().enumerate() {
            let n = &self.nodes[i];
            let data = n.data_dir().display().to_string();
            // The first as USER@HOST with --ssh-port, the others as USER@HOST:PORT.
            let ssh = if k == 0 {
                self.sshd.destination()
            } else {
                format!("{}:{}", self.sshd.destination(), self.sshd.port())
            };
            let flags = [
                ("--ssh", ssh),
                ("--manifests-dir", n.manifests_dir().display().to_string()),
                ("--etcd-data-dir", data.clone()),
                ("--node-pki-dir", n.pki_dir().display().to_string()),
                ("--admin-conf", n.admin_conf().display().to_string()),
                ("--staging-dir", self.staging(i).display().to_string()),
                // No crictl: "stopped" is "no etcd on this data dir" ([/]: not this shell).
                (
                    "--stopped-check",
                    format!(
                        "! pgrep -f -- '--data-dir=[/]{}' >/dev/null",
                        data.trim_start_matches('/')
                    ),
                ),
                (
                    "--ready-check",
                    format!(
                        "ETCDCTL_API=3 etcdctl --endpoints={} endpoint health",
                        n.client_url()
                    ),
                ),
            ];
            for (f, v) in flags {
                a.push(f.into());
                a.push(v);
            }
        }
        a
    }

    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_on(&[0, 1, 2], extra, env)
    }

    fn trees(&self) -> Vec<Tree> {
        self.nodes.iter().map(|n| n.snapshot_tree()).collect()
    }

    /// Each node's keys once all three members serve again.
    fn keys_when_healthy(&self) -> Vec<Vec<String>> {
        for n in &self.nodes {
            assert!(
                n.wait_healthy(Duration::from_secs(60)),
                "member {} did not come back\n{}",
                n.member(),
                n.log()
            );
        }
        self.nodes.iter().map(|n| n.keys()).collect()
    }

    /// The leader id each member reports (`etcdctl endpoint status`).
    fn leaders(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let o = n.ctl(&["endpoint", "status", "-w", "json"]);
                assert!(o.status.success(), "{}", stderr(&o));
                let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
                let leader = v[0]["Status"]["leader"].as_u64().expect("a leader id");
                assert_ne!(leader, 0, "a member without a leader: {v}");
                leader.to_string()
            })
            .collect()
    }

    /// `(name, peer URLs)` of each member, sorted, as the first node's etcd lists them.
    fn members(&self) -> Vec<(String, String)> {
        let o = self.nodes[0].ctl(&["member", "list", "-w", "json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let mut m: Vec<(String, String)> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().into(),
                    m["peerURLs"].to_string(),
                )
            })
            .collect();
        m.sort();
        m
    }
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn restored_onto_all_three_nodes_the_members_form_one_cluster_serving_the_backup() {
    let s = scene();
    // A certificate issued for node 2 alone (it names its address): the backup holds node
    // 1's, which node 2's etcd peers would refuse.
    let own = s.nodes[1].pki_dir().join("apiserver.crt");
    std::fs::write(&own, "node 2's own serving certificate").unwrap();
    let backed_up_ca = std::fs::read(s.nodes[0].pki_dir().join("ca.crt")).unwrap();
    let members_before = s.members();
    let before = s.trees();

    // Two nodes of three would split the cluster: refused in preflight, naming the third.
    let out = s.run_on(&[0, 1], &["--yes"], &[]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    assert!(
        line.contains("names 3 etcd members")
            && line.contains("the restore covers only cp-1 and cp-2;")
            && line.contains("while cp-3 still hold")
            && line.contains("nothing was changed"),
        "{line}"
    );
    assert_eq!(s.trees(), before, "a refused restore changed a node");

    // The dry run: one plan, each step on the node it runs on, one token for all.
    let out = s.run(&["--dry-run"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(
        plan.contains("onto 3 nodes (") && plan.contains(": member cp-3"),
        "{plan}"
    );
    // One restore-snapshot command per node (each with the etcdutl and the etcdctl form),
    // all with one new token.
    let tokens: Vec<&str> = plan
        .split("--initial-cluster-token=")
        .skip(1)
        .filter_map(|t| t.split([' ', ';', '\n']).next())
        .collect();
    let lines = plan
        .lines()
        .filter(|l| l.contains("--initial-cluster-token="))
        .count();
    assert_eq!(lines, 3, "{plan}");
    let distinct: std::collections::BTreeSet<&str> = tokens.iter().copied().collect();
    assert_eq!(distinct.len(), 1, "{plan}");
    assert!(tokens[0].starts_with("cpvault-restore-"), "{plan}");
    let cluster = s.nodes[0].initial_cluster();
    for n in &s.nodes {
        assert!(
            plan.contains(&format!(
                "--name={} --initial-cluster={cluster} ",
                n.member()
            )),
            "{plan}"
        );
    }
    let order: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|k| ["stop-control-plane", "restore-snapshot", "wait-quorum"].contains(k))
        .collect();
    assert_eq!(
        order,
        [
            "stop-control-plane",
            "stop-control-plane",
            "stop-control-plane",
            "restore-snapshot",
            "restore-snapshot",
            "restore-snapshot",
            "wait-quorum"
        ]
    );
    let json = s.run(&["--dry-run", "--output", "json"], &[]);
    assert!(json.status.success(), "{}", stderr(&json));
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let members: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["member"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["cp-1", "cp-2", "cp-3"], "{v:#}");
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(
        steps.len(),
        // The text plan's numbered lines (` 1. preflight …`).
        plan.lines()
            .filter(|l| {
                l.trim_start()
                    .split_once(". ")
                    .is_some_and(|(n, _)| n.parse::<usize>().is_ok())
            })
            .count(),
        "{v:#}"
    );
    assert!(steps.iter().all(|st| st["node"].is_string()), "{v:#}");

    // Without --ssh, every control-plane node the admin cluster's API lists (by name; the
    // node flags pair with them in that order), with the node key from its secret.
    let api = crate::support::kubeapi::KubeApi::start();
    for i in [3, 1, 2] {
        api.add_node(
            &format!("admin-cp-{i}"),
            &[("node-role.kubernetes.io/control-plane", "")],
            &[("InternalIP", "127.0.0.1")],
        );
    }
    let key = std::fs::read(s.sshd.client_key()).unwrap();
    api.add_secret("kube-system", "sshkeys", &[("vsphere_tmp", &key)]);
    let kubeconfig = s.w.path("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin");
    let mut args = s.args_on(&[0, 1, 2]);
    while let Some(i) = args.iter().position(|a| a == "--ssh" || a == "--ssh-key") {
        args.drain(i..i + 2);
    }
    args.extend(
        [
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--ssh-user",
            &s.sshd.user(),
        ]
        .map(String::from),
    );
    let out = s.run_args(args, &["--dry-run"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 1..=3 {
        assert!(
            stderr(&out).contains(&format!("control-plane node admin-cp-{i} at 127.0.0.1")),
            "{}",
            stderr(&out)
        );
    }
    assert!(
        stdout(&out).contains("onto 3 nodes (") && stdout(&out).contains(": member cp-3"),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.trees(), before, "a dry run changed a node");

    // Restored onto all three.
    let out = s.run(&["--yes"], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        s.nodes[1].log()
    );
    for keys in s.keys_when_healthy() {
        assert_eq!(keys, s.keys_at_backup);
    }
    let leaders = s.leaders();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    assert_eq!(s.members(), members_before);
    assert_eq!(
        std::fs::read_to_string(&own).unwrap(),
        "node 2's own serving certificate",
        "node 2 keeps its own certificate"
    );
    for n in &s.nodes {
        assert_eq!(
            std::fs::read(n.pki_dir().join("ca.crt")).unwrap(),
            backed_up_ca
        );
    }
    assert!(s.w.path("admin.conf").exists());
    for i in 0..3 {
        assert_eq!(
            std::fs::read_dir(s.staging(i)).unwrap().count(),
            0,
            "staging or journal left on node {i}"
        );
    }
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_failure_on_one_node_rolls_every_node_back_and_the_old_cluster_serves_again() {
    let s = scene();
    let keys_before = s.keys_when_healthy();
    assert_eq!(keys_before[0].len(), KEYS + 1);
    let before = s.trees();
    // At every changing step, on the second node (the first has done it, the third not yet;
    // e.g. after the second node started, two restored members run and the third is
    // stopped), and after every member started, at the wait for quorum. `moved` is on how
    // many nodes move-aside had run when the failure came.
    for (at, step, moved) in [
        ("stage@2", "stage", 0),
        // The last node's stage streams into every node's staging dir: the CA keys are on
        // all three when it fails, and all three dirs must go.
        ("stage@3", "stage", 0),
        ("stop-control-plane@2", "stop-control-plane", 0),
        ("move-aside@2", "move-aside", 2),
        ("restore-snapshot@2", "restore-snapshot", 3),
        ("pki@2", "pki", 3),
        ("start-control-plane@2", "start-control-plane", 3),
        ("wait-ready@2", "wait-ready", 3),
        ("wait-quorum", "wait-quorum", 3),
    ] {
        let out = s.run(&["--yes"], &[("CPVAULT_RESTORE_FAIL_AT", at)]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{at}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("restore step {step} failed on")) && err.contains("rolled back"),
            "{at}: {err}"
        );
        // Every node's steps are undone, each on its node.
        assert_eq!(
            err.matches("rolling back move-aside on ").count(),
            moved,
            "{at}: {err}"
        );
        assert_eq!(s.keys_when_healthy(), keys_before, "{at}: keys changed");
        assert_eq!(s.trees(), before, "{at}: a node's tree changed");
        assert!(!s.w.path("admin.conf").exists(), "{at}: kubeconfig left");
        for i in 0..3 {
            assert_eq!(
                std::fs::read_dir(s.staging(i)).unwrap().count(),
                0,
                "{at}: staging or journal left on node {i}"
            );
        }
    }
    let leaders = s.leaders();
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_killed_restore_over_three_nodes_is_undone_node_by_node_from_their_own_journals() {
    let s = scene();
    let keys_before = s.keys_when_healthy();
    let before = s.trees();
    // Killed after the second node's snapshot restore: every control plane stopped, two data
    // dirs restored, the third only moved aside.
    let mut args = s.args_on(&[0, 1, 2]);
    args.push("--yes".into());
    let mut p = start_paused(
        cpvault_cmd(s.w.dir.path()).args(&args),
        "restore-snapshot@2",
        || s.nodes[1].log(),
    );
    p.kill();
    let (id, seen) = (p.id, p.seen);
    assert!(seen.contains(&format!("--rollback {id} --ssh ")), "{seen}");
    // Each node's journal lists its own steps only.
    let steps = |i: usize| -> Vec<String> {
        let j = s.staging(i).join(format!("{id}.journal"));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&j).unwrap_or_else(|e| panic!("{j:?}: {e}")))
                .unwrap();
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["node"], i, "{v:#}");
                e["name"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let restored = [
        "stage",
        "stop-control-plane",
        "move-aside",
        "restore-snapshot",
    ];
    assert_eq!(steps(0), restored);
    assert_eq!(steps(1), restored);
    assert_eq!(steps(2), restored[..3]);

    // Over all three, the dry run shows what each node's journal would undo.
    let mut a = s.args_on(&[0, 1, 2]);
    a.remove(1);
    a.extend(["--rollback", &id, "--dry-run", "--output", "json"].map(String::from));
    let out = s.run_args(a, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let undo: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["undo"].as_array().unwrap().len())
        .collect();
    assert_eq!(undo, [4, 4, 3], "{v:#}");

    // `--rollback` on one node at a time, each with its own flags, undoes that node's steps.
    for i in 0..3 {
        let mut a = s.args_on(&[i]);
        a.remove(1);
        a.extend(["--rollback", &id, "--yes"].map(String::from));
        let out = s.run_args(a, &[], &[]);
        assert!(out.status.success(), "node {i}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("rolled back restore {id} on ")),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(s.keys_when_healthy(), keys_before);
    assert_eq!(s.trees(), before, "a node's tree changed");
}
