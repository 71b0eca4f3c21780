//! A sandbox control-plane node for restore tests: a directory standing for a kubeadm node's
//! filesystem (`etc/kubernetes/{manifests,pki,admin.conf}` and `var/lib/etcd` under `root()`)
//! and a small test "kubelet" thread that makes its static-pod manifests real. The kubelet
//! runs each manifest's container command as a local process, stops it when the manifest
//! leaves the directory, restarts it when the manifest changes, and restarts it with back-off
//! when it exits by itself. With a real sshd on loopback as the "node", `cpvault restore` runs
//! its real steps against a real etcd. Test support only: on drop the kubelet stops and every
//! process it started is killed. Logs live next to `root()`, never under it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{free_port, make_pki, require, stderr, stdout};

/// The etcd member name written into etcd.yaml (`--name`, `--initial-cluster`).
pub const MEMBER: &str = "node1";
/// Owner of a fresh data dir when the tests run as root: the etcd user of GKE nodes. Root-run
/// etcd can still use it, and a restore must give the new data dir the same owner.
pub const ETCD_UID: u32 = 2001;
const POLL: Duration = Duration::from_millis(100);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stopped process gets between SIGTERM and SIGKILL (the kubelet's grace period).
const GRACE: Duration = Duration::from_secs(5);

/// The sandbox node; see the module docs.
pub struct SandboxNode {
    dir: tempfile::TempDir,
    root: PathBuf,
    client_port: u16,
    peer_port: u16,
    running: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    kubelet: Option<JoinHandle<()>>,
}

impl SandboxNode {
    /// Builds the node tree, starts the kubelet and returns once etcd is healthy.
    pub fn start() -> SandboxNode {
        require("etcd", "etcd-server");
        require("etcdctl", "etcd-client");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let kube = root.join("etc/kubernetes");
        fs::create_dir_all(kube.join("manifests")).unwrap();
        make_pki(&kube.join("pki"));
        // Like kubeadm: 0700, and owned by a dedicated etcd user where we can chown.
        let data = root.join("var/lib/etcd");
        fs::create_dir_all(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
        if fs::metadata(dir.path()).unwrap().uid() == 0 {
            std::os::unix::fs::chown(&data, Some(ETCD_UID), Some(ETCD_UID)).unwrap();
        }
        fs::write(kube.join("admin.conf"), ADMIN_CONF).unwrap();
        fs::set_permissions(kube.join("admin.conf"), fs::Permissions::from_mode(0o600)).unwrap();

        let (client_port, peer_port) = (free_port(), free_port());
        let mut node = SandboxNode {
            root,
            client_port,
            peer_port,
            running: Arc::default(),
            stop: Arc::default(),
            kubelet: None,
            dir,
        };
        fs::write(node.manifests_dir().join("etcd.yaml"), node.etcd_yaml()).unwrap();
        fs::write(
            node.manifests_dir().join("kube-apiserver.yaml"),
            APISERVER_YAML,
        )
        .unwrap();
        let logs = node.dir.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        let mut kubelet = Kubelet {
            env: Env {
                manifests: node.manifests_dir(),
                work: node.dir.path().to_path_buf(),
                logs,
            },
            pods: BTreeMap::new(),
            running: node.running.clone(),
        };
        let stop = node.stop.clone();
        node.kubelet = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                kubelet.tick();
                std::thread::sleep(POLL);
            }
        }));
        assert!(
            node.wait_healthy(Duration::from_secs(30)),
            "sandbox etcd did not become healthy\n{}",
            node.log()
        );
        node
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

    /// `node1=http://127.0.0.1:PORT`, the `--initial-cluster` of etcd.yaml.
    pub fn initial_cluster(&self) -> String {
        format!("{MEMBER}={}", self.peer_url())
    }

    /// A scratch directory outside `root()` that is removed with the node.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// etcd.yaml as kubeadm writes it, with this node's paths and ports.
    pub fn etcd_yaml(&self) -> String {
        let (data, client, peer) = (self.data_dir(), self.client_url(), self.peer_url());
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\n  \
             labels:\n    component: etcd\n    tier: control-plane\nspec:\n  containers:\n  \
             - name: etcd\n    image: registry.k8s.io/etcd:3.4.23-0\n    command:\n    - etcd\n    \
             - --name={MEMBER}\n    - --data-dir={}\n    - --listen-client-urls={client}\n    \
             - --advertise-client-urls={client}\n    - --listen-peer-urls={peer}\n    \
             - --initial-advertise-peer-urls={peer}\n    - --initial-cluster={}\n    \
             - --initial-cluster-state=new\n  hostNetwork: true\n",
            data.display(),
            self.initial_cluster(),
        )
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

    /// Every file and directory below `root()` (not `root()` itself), sorted: relative path,
    /// mode (permission bits), uid, gid and content. Files below the etcd data dir get empty
    /// content, since a running etcd rewrites them constantly; `*.log` files are skipped.
    /// Symlinks are not followed; their content is the link target.
    pub fn snapshot_tree(&self) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut out = vec![];
        walk(&self.root, &self.root, &self.data_dir(), &mut out);
        out.sort();
        out
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
            s += &format!("--- {name} (last lines) ---\n{}", tail(f, 0, 30));
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

fn walk(root: &Path, dir: &Path, data: &Path, out: &mut Vec<(String, u32, u32, u32, Vec<u8>)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for p in entries.filter_map(|e| Some(e.ok()?.path())) {
        // etcd may delete a file between read_dir and here; such a file is simply skipped.
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_file() && p.extension().is_some_and(|e| e == "log") {
            continue;
        }
        let content = if m.is_symlink() {
            fs::read_link(&p)
                .map(|t| t.into_os_string().into_encoded_bytes())
                .unwrap_or_default()
        } else if m.is_file() && !p.starts_with(data) {
            fs::read(&p).unwrap()
        } else {
            vec![]
        };
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        out.push((rel, m.mode() & 0o7777, m.uid(), m.gid(), content));
        if m.is_dir() {
            walk(root, &p, data, out);
        }
    }
}

/// The kubelet thread's state. Dropping it (normally or while unwinding) kills every process.
struct Kubelet {
    env: Env,
    pods: BTreeMap<String, Pod>,
    running: Arc<Mutex<Vec<String>>>,
}

/// Where the kubelet looks and writes; separate from `pods` so both can be borrowed at once.
struct Env {
    manifests: PathBuf,
    work: PathBuf,
    logs: PathBuf,
}

struct Pod {
    manifest: Vec<u8>,
    command: Result<Vec<String>, String>,
    process: Option<Process>,
    next_start: Instant,
    backoff: Duration,
}

struct Process {
    child: Child,
    started: Instant,
    /// Length of the output log when it started, so an exit reports only its own output.
    log_offset: u64,
}

impl Kubelet {
    fn tick(&mut self) {
        let present = read_manifests(&self.env.manifests);
        // A removed or changed manifest stops its process, as the real kubelet does.
        let stale: Vec<String> = (self.pods.iter())
            .filter(|(name, pod)| present.get(*name) != Some(&pod.manifest))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let mut pod = self.pods.remove(&name).unwrap();
            let why = match present.contains_key(&name) {
                true => "manifest changed",
                false => "manifest removed",
            };
            self.env.note(&format!("{name}: {why}"));
            self.env.stop(&name, &mut pod, GRACE);
        }
        for (name, manifest) in present {
            if self.pods.contains_key(&name) {
                continue;
            }
            let command = parse_command(&String::from_utf8_lossy(&manifest));
            match &command {
                Ok(c) => self
                    .env
                    .note(&format!("{name}: new manifest, command {c:?}")),
                Err(e) => self.env.note(&format!("{name}: not started: {e}")),
            }
            let pod = Pod {
                manifest,
                command,
                process: None,
                next_start: Instant::now(),
                backoff: BACKOFF_START,
            };
            self.pods.insert(name, pod);
        }
        for (name, pod) in &mut self.pods {
            self.env.reap(name, pod);
            if pod.process.is_none() && Instant::now() >= pod.next_start {
                self.env.start(name, pod);
            }
        }
        *self.running.lock().unwrap() = (self.pods.iter())
            .filter(|(_, pod)| pod.process.is_some())
            .map(|(name, _)| name.clone())
            .collect();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for (name, pod) in &mut self.pods {
            self.env.stop(name, pod, Duration::ZERO);
        }
        if let Ok(mut running) = self.running.lock() {
            running.clear();
        }
    }
}

impl Env {
    /// Appends a timestamped line to the kubelet log.
    fn note(&self, msg: &str) {
        let time = chrono::Utc::now().format("%H:%M:%S%.3f");
        let line = format!("{time} {}\n", msg.trim_end());
        let path = self.logs.join("kubelet.log");
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn output_log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Starts the pod's command in its own process group, so stopping it reaches any
    /// processes it forked. A command that cannot be started counts as a crash.
    fn start(&self, name: &str, pod: &mut Pod) {
        let Ok(cmd) = &pod.command else { return };
        let path = self.output_log(name);
        let spawned = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|out| {
                let log_offset = out.metadata()?.len();
                let child = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .current_dir(&self.work)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    .process_group(0)
                    .spawn()?;
                Ok(Process {
                    child,
                    started: Instant::now(),
                    log_offset,
                })
            });
        match spawned {
            Ok(p) => {
                self.note(&format!(
                    "{name}: started pid {}: {}",
                    p.child.id(),
                    cmd.join(" ")
                ));
                pod.process = Some(p);
            }
            Err(e) => self.back_off(name, pod, &format!("could not start: {e}"), ""),
        }
    }

    /// Notices a process that exited by itself and schedules its restart.
    fn reap(&self, name: &str, pod: &mut Pod) {
        let Some(p) = &mut pod.process else { return };
        let Ok(Some(status)) = p.child.try_wait() else {
            return;
        };
        let (pid, ran) = (p.child.id(), p.started.elapsed());
        // Whatever it forked and left behind goes too.
        signal_group(pid, "KILL");
        // Like CrashLoopBackOff: a process that ran a while starts over with a short delay.
        if ran >= Duration::from_secs(10) {
            pod.backoff = BACKOFF_START;
        }
        let out = tail(&self.output_log(name), p.log_offset, 10);
        pod.process = None;
        let why = format!("pid {pid} exited after {ran:.1?}: {status}");
        self.back_off(name, pod, &why, &out);
    }

    /// Logs why the pod is down and when it restarts, followed by `detail` lines.
    fn back_off(&self, name: &str, pod: &mut Pod, why: &str, detail: &str) {
        let ms = pod.backoff.as_millis();
        self.note(&format!("{name}: {why}; restarting in {ms} ms\n{detail}"));
        pod.next_start = Instant::now() + pod.backoff;
        pod.backoff = (pod.backoff * 2).min(BACKOFF_MAX);
    }

    /// SIGTERM to the process group, up to `grace` to exit, then SIGKILL; always reaped.
    fn stop(&self, name: &str, pod: &mut Pod, grace: Duration) {
        let Some(mut p) = pod.process.take() else {
            return;
        };
        let (pid, t0) = (p.child.id(), Instant::now());
        signal_group(pid, "TERM");
        let status = loop {
            match p.child.try_wait() {
                Ok(Some(s)) => break s.to_string(),
                Ok(None) if t0.elapsed() < grace => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    signal_group(pid, "KILL");
                    let _ = p.child.kill();
                    break format!("{:?} after SIGKILL", p.child.wait().map(|s| s.to_string()));
                }
            }
        };
        signal_group(pid, "KILL");
        let ms = t0.elapsed().as_millis();
        self.note(&format!("{name}: stopped pid {pid} in {ms} ms: {status}"));
    }
}

/// Sends SIGsig to process group `pgid` with the `kill` command (no unsafe code here). A
/// group that is already gone is fine, so kill's complaint about it is dropped.
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The manifests in `dir` and their bytes; none if `dir` is missing. Like the real kubelet,
/// every regular file counts except hidden ones, whatever its name: an `etcd.yaml.bak` left
/// in the directory would run a second etcd on a real node, so it runs here too (and a file
/// that is no manifest is logged as not started).
fn read_manifests(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let manifest = !name.starts_with('.') && e.file_type().ok()?.is_file();
            manifest.then_some(())?;
            Some((name, fs::read(e.path()).ok()?))
        })
        .collect()
}

/// The last `n` lines of `path` after byte `offset`, each indented and ending in a newline.
fn tail(path: &Path, offset: u64, n: usize) -> String {
    let mut buf = vec![];
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f
            .seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_to_end(&mut buf));
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

/// Reads the first container's command from a static-pod manifest. No YAML library is a
/// dependency the tests can use, so this is a small, strict reader of the one shape kubeadm
/// writes: the first `command:` key with no inline value, followed by `- item` lines at the
/// key's indentation or deeper, ending at the first other line. Items are plain scalars, or
/// single- or double-quoted strings without escapes. Anything else (flow lists, multi-line
/// items, `#` comments, `key: value` items) is an error rather than a guess.
fn parse_command(manifest: &str) -> Result<Vec<String>, String> {
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim_start() != "command:");
    let key = lines.next().ok_or("no `command:` list")?;
    let mut command = vec![];
    for line in lines {
        let item = line.trim_start_matches(' ');
        if indent(line) < indent(key) || !(item.starts_with("- ") || item == "-") {
            if indent(line) > indent(key) && !item.is_empty() {
                return Err(format!("unsupported line in `command:`: {line:?}"));
            }
            break;
        }
        command.push(scalar(item[1..].trim())?);
    }
    match command.first() {
        Some(first) if !first.is_empty() => Ok(command),
        _ => Err("empty `command:` list".into()),
    }
}

/// A plain scalar, or a quoted one without escapes (`''`, `\`); anything else is refused.
fn scalar(s: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        match s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            Some(inner) if !inner.contains([q, '\\']) => return Ok(inner.to_string()),
            _ => {}
        }
    }
    let indicators = "[]{}&*!|>'\"%@`#";
    if s.is_empty()
        || s.starts_with(|c| indicators.contains(c))
        || s.contains(": ")
        || s.contains(" #")
        || s.ends_with(':')
    {
        return Err(format!("unsupported item in `command:`: {s:?}"));
    }
    Ok(s.to_string())
}

const APISERVER_YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
  labels:
    component: kube-apiserver
    tier: control-plane
spec:
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.33.0
    # A stand-in: the restore only stops and starts it.
    command:
    - sleep
    - \"100000\"
  hostNetwork: true
";

const ADMIN_CONF: &str = "\
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://127.0.0.1:6443
  name: sandbox
contexts:
- context:
    cluster: sandbox
    user: kubernetes-admin
  name: kubernetes-admin@sandbox
current-context: kubernetes-admin@sandbox
users:
- name: kubernetes-admin
  user:
    token: sandbox-admin-token
";

#[cfg(test)]
mod tests {
    use super::*;

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
}
