//! A sandbox control-plane node for restore tests: a directory standing for a kubeadm node's
//! filesystem (`etc/kubernetes/{manifests,pki,admin.conf}` and `var/lib/etcd` under `root()`)
//! and a small test "kubelet" thread that makes its static-pod manifests real. The kubelet
//! runs each manifest's container command as a local process, stops it when the manifest
//! leaves the directory, restarts it when the manifest changes, and restarts it with back-off
//! when it exits by itself. With a real sshd on loopback as the "node", `cpvault restore` runs
//! its real steps against a real etcd. Several nodes ([`SandboxNode::start_cluster`]) stand
//! for the control-plane nodes of an HA cluster: each etcd.yaml names its own member and
//! ports and the one shared `--initial-cluster`, so their kubelets start a real multi-member
//! etcd on loopback. Test support only: on drop the kubelet stops and every process it
//! started is killed. Logs live next to `root()`, never under it.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{free_port, require, stderr, stdout};

// The test kubelet: runs the static-pod manifests as local processes, with back-off.
mod kubelet;
// Stopping a process group, shared with the test API server's pod processes.
pub(crate) use kubelet::signal_group;
// The one manifest shape the kubelet reads: a container's `command:` list.
mod manifest;
#[cfg(test)]
mod tests;
// The node's filesystem: laying it out, its fixed files, etcd.yaml, and snapshotting it.
mod tree;

/// The etcd member name written into etcd.yaml (`--name`, `--initial-cluster`).
pub const MEMBER: &str = "node1";
/// Owner of a fresh data dir when the tests run as root: the etcd user of GKE nodes. Root-run
/// etcd can still use it, and a restore must give the new data dir the same owner.
pub const ETCD_UID: u32 = 2001;
const POLL: Duration = Duration::from_millis(100);

/// The sandbox node; see the module docs.
pub struct SandboxNode {
    dir: tempfile::TempDir,
    root: PathBuf,
    /// etcd's `--name`.
    member: String,
    /// etcd.yaml's `--initial-cluster` (`None`: this member alone).
    cluster: Option<String>,
    client_port: u16,
    peer_port: u16,
    running: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    kubelet: Option<JoinHandle<()>>,
}

impl SandboxNode {
    /// Builds the node tree, starts the kubelet and returns once etcd is healthy.
    pub fn start() -> SandboxNode {
        let mut node = SandboxNode::lay_out(MEMBER, free_port(), None);
        node.run_kubelet();
        assert!(
            node.wait_healthy(Duration::from_secs(30)),
            "sandbox etcd did not become healthy\n{}",
            node.log()
        );
        node
    }

    /// `count` nodes whose etcds (members `cp-1`, `cp-2`, …) form one cluster; returns once
    /// every member is healthy.
    pub fn start_cluster(count: usize) -> Vec<SandboxNode> {
        let peers: Vec<(String, u16)> = (1..=count)
            .map(|i| (format!("cp-{i}"), free_port()))
            .collect();
        let cluster = peers
            .iter()
            .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<SandboxNode> = peers
            .iter()
            .map(|(n, p)| SandboxNode::lay_out(n, *p, Some(cluster.clone())))
            .collect();
        for n in &mut nodes {
            n.run_kubelet();
        }
        for n in &nodes {
            assert!(
                n.wait_healthy(Duration::from_secs(60)),
                "sandbox etcd member {} did not become healthy\n{}",
                n.member,
                n.log()
            );
        }
        nodes
    }

    /// The node's tree and manifests, no kubelet yet.
    fn lay_out(member: &str, peer_port: u16, cluster: Option<String>) -> SandboxNode {
        require("etcd", "etcd-server");
        require("etcdctl", "etcd-client");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        tree::lay_out(&root);
        let node = SandboxNode {
            root,
            member: member.to_string(),
            cluster,
            client_port: free_port(),
            peer_port,
            running: Arc::default(),
            stop: Arc::default(),
            kubelet: None,
            dir,
        };
        fs::write(node.manifests_dir().join("etcd.yaml"), node.etcd_yaml()).unwrap();
        fs::write(
            node.manifests_dir().join("kube-apiserver.yaml"),
            tree::APISERVER_YAML,
        )
        .unwrap();
        node
    }

    fn run_kubelet(&mut self) {
        let logs = self.dir.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        self.kubelet = Some(kubelet::spawn(
            self.manifests_dir(),
            self.dir.path().to_path_buf(),
            logs,
            self.running.clone(),
            self.stop.clone(),
        ));
    }

    /// etcd's `--name` on this node.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The node's filesystem root; every node path is below it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join("etc/kubernetes/manifests")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("var/lib/etcd")
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("etc/kubernetes/pki")
    }

    pub fn admin_conf(&self) -> PathBuf {
        self.root.join("etc/kubernetes/admin.conf")
    }

    /// `http://127.0.0.1:PORT`, etcd's client URL.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT`, etcd's peer URL (`--initial-advertise-peer-urls`).
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// `node1=http://127.0.0.1:PORT`, the `--initial-cluster` of etcd.yaml (every member's,
    /// on a node of [`SandboxNode::start_cluster`]).
    pub fn initial_cluster(&self) -> String {
        self.cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.member, self.peer_url()))
    }

    /// Rewrites etcd.yaml so that its `--initial-cluster` also names `others` (`NAME=URL`
    /// each) with `--initial-cluster-state=state`, as on one member of an HA control plane,
    /// and waits until the kubelet restarted etcd and it is healthy again. etcd restarting on
    /// its data dir keeps its one-member cluster: the flags only matter to a new data dir.
    pub fn name_other_members(&self, others: &[String], state: &str) -> String {
        let mut cluster = vec![self.initial_cluster()];
        cluster.extend(others.iter().cloned());
        let yaml = self
            .etcd_yaml()
            .replace(
                &format!("--initial-cluster={}", self.initial_cluster()),
                &format!("--initial-cluster={}", cluster.join(",")),
            )
            .replace(
                "--initial-cluster-state=new",
                &format!("--initial-cluster-state={state}"),
            );
        assert!(yaml.contains(&cluster.join(",")));
        fs::write(self.manifests_dir().join("etcd.yaml"), &yaml).unwrap();
        // The kubelet polls every 100 ms; let it notice the change and stop the old etcd.
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            self.wait_healthy(Duration::from_secs(30)),
            "etcd did not come back after etcd.yaml changed\n{}",
            self.log()
        );
        yaml
    }

    /// A scratch directory outside `root()` that is removed with the node.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `etcdctl --endpoints <client_url> ARGS` (API v3).
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.client_url()])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn put(&self, k: &str, v: &str) {
        let o = self.ctl(&["put", k, v]);
        assert!(o.status.success(), "put: {}\n{}", stderr(&o), self.log());
    }

    pub fn get(&self, k: &str) -> Option<String> {
        let o = self.ctl(&["get", "--print-value-only", k]);
        assert!(o.status.success(), "get: {}\n{}", stderr(&o), self.log());
        let s = stdout(&o);
        let s = s.trim_end_matches('\n');
        (!s.is_empty()).then(|| s.to_string())
    }

    /// Every key, sorted (keys holding a newline are not supported).
    pub fn keys(&self) -> Vec<String> {
        let o = self.ctl(&["get", "", "--prefix", "--keys-only"]);
        assert!(o.status.success(), "keys: {}\n{}", stderr(&o), self.log());
        let mut keys: Vec<String> = stdout(&o)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        keys.sort();
        keys
    }

    /// `etcdctl snapshot save` from the running etcd.
    pub fn snapshot_save(&self, path: &Path) {
        let o = self.ctl(&["snapshot", "save", path.to_str().unwrap()]);
        assert!(o.status.success(), "snapshot save: {}", stderr(&o));
    }

    /// Whether `etcdctl endpoint health` succeeds; short timeouts, as etcd is often down.
    pub fn healthy(&self) -> bool {
        let args = [
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "endpoint",
            "health",
        ];
        self.ctl(&args).status.success()
    }

    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, SandboxNode::healthy)
    }

    /// Polls `cond` every 100 ms until it holds (true) or `timeout` passes (false).
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&SandboxNode) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Manifest names whose process runs, sorted, as of the kubelet's last poll (≤ 100 ms ago).
    pub fn running(&self) -> Vec<String> {
        self.running.lock().unwrap().clone()
    }

    /// The kubelet's log, then the last lines of each manifest's process output.
    pub fn log(&self) -> String {
        let logs = self.dir.path().join("logs");
        let mut s = String::from("--- kubelet ---\n");
        s += &fs::read_to_string(logs.join("kubelet.log")).unwrap_or_default();
        let mut files: Vec<PathBuf> = fs::read_dir(&logs)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files.iter().filter(|f| !f.ends_with("kubelet.log")) {
            let name = f.file_name().unwrap().to_string_lossy();
            s += &format!("--- {name} (last lines) ---\n{}", kubelet::tail(f, 0, 30));
        }
        s
    }
}

impl Drop for SandboxNode {
    fn drop(&mut self) {
        // The kubelet kills its processes when its loop ends (or when it unwinds).
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.kubelet.take() {
            let _ = t.join();
        }
    }
}
