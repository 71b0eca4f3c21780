//! The kubelet-like half of the test API server: a pod's first container command runs as a
//! local process (in its own process group, output to the pod's log when the test gave a log
//! dir), and a deleted pod's process is stopped — SIGTERM, a grace period, SIGKILL — before
//! the pod object goes away, as a real kubelet does. A volume mounted from a registered
//! PersistentVolumeClaim is a sandbox dir: its mount path is replaced by that dir in the
//! container's command and in every exec'd argv. No process outlives the server.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::rest::now;
use super::{lock, Shared, State};
use crate::support::node::signal_group;

/// Between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// A pod's running process.
pub(super) struct PodProcess {
    pub namespace: String,
    pub name: String,
    pub child: Child,
}

/// The container `container` of `pod` (the first when not named).
fn container<'a>(pod: &'a Value, container: Option<&str>) -> Option<&'a Value> {
    let cs = pod["spec"]["containers"].as_array()?;
    match container {
        Some(n) => cs.iter().find(|c| c["name"] == n),
        None => cs.first(),
    }
}

/// (mount path, sandbox dir) of every registered claim the container mounts, longest first.
fn mounts(st: &State, pod: &Value, name: Option<&str>) -> Vec<(String, String)> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let Some(c) = container(pod, name) else {
        return vec![];
    };
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<(String, String)> = (c["volumeMounts"].as_array().into_iter().flatten())
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v["name"] == m["name"])?;
            let claim = v["persistentVolumeClaim"]["claimName"].as_str()?;
            let (_, _, dir) = st.volumes.iter().find(|(n, c, _)| n == ns && c == claim)?;
            Some((
                m["mountPath"].as_str()?.trim_end_matches('/').to_string(),
                dir.display().to_string(),
            ))
        })
        .collect();
    out.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    out
}

/// Whether `argv0` is one of the binaries a distroless etcd image holds.
pub(super) fn own_binary(argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    ["etcd", "etcdctl", "etcdutl"].contains(&base)
}

/// Whether the image of `container` of `pod` was made distroless.
pub(super) fn distroless(st: &State, pod: &Value, name: Option<&str>) -> bool {
    container(pod, name)
        .and_then(|c| c["image"].as_str())
        .is_some_and(|i| st.distroless_images.iter().any(|d| d == i))
}

/// `argv` as it runs in `container` of `pod`: its volumes' mount paths replaced by their
/// sandbox dirs, then the test's `map_exec` substitutions.
pub(super) fn substitute(
    st: &State,
    pod: &Value,
    name: Option<&str>,
    argv: &[String],
) -> Vec<String> {
    let mounts = mounts(st, pod, name);
    let (ns, this) = (&pod["metadata"]["namespace"], &pod["metadata"]["name"]);
    argv.iter()
        .map(|a| {
            let a = mounts
                .iter()
                .fold(a.clone(), |a, (from, to)| a.replace(from, to));
            let a = st
                .pod_maps
                .iter()
                .filter(|(n, p, _, _)| ns == n.as_str() && this == p.as_str())
                .fold(a, |a, (_, _, from, to)| a.replace(from, to));
            st.maps.iter().fold(a, |a, (from, to)| a.replace(from, to))
        })
        .collect()
}

/// Starts the first container's command of `pod` (stored already), if it has one.
pub(super) fn start(st: &mut State, pod: &Value) {
    let Some(c) = container(pod, None) else {
        return;
    };
    let mut argv: Vec<String> = (c["command"].as_array().into_iter().flatten())
        .chain(c["args"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str().map(String::from))
        .collect();
    if argv.is_empty() {
        return;
    }
    argv = substitute(st, pod, None, &argv);
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    if distroless(st, pod, None) && !own_binary(&argv[0]) {
        // What containerd tells the kubelet; the pod fails (restartPolicy Never assumed).
        let message = format!("failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown", argv[0]);
        let uid = pod["metadata"]["uid"].clone();
        if let Some(p) = st.pods.iter_mut().find(|p| p["metadata"]["uid"] == uid) {
            p["status"]["phase"] = json!("Failed");
            p["status"]["conditions"][0]["status"] = json!("False");
            p["status"]["containerStatuses"][0]["ready"] = json!(false);
            p["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 128,
                "reason": "StartError", "message": message, "finishedAt": now()}});
        }
        return;
    }
    let log = |dir: &std::path::Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{ns}_{name}.log")))
            .ok()
    };
    let out = st.pod_logs.as_deref().and_then(log);
    let (stdout, stderr) = match out.and_then(|f| Some((f.try_clone().ok()?, f))) {
        Some((a, b)) => (Stdio::from(a), Stdio::from(b)),
        None => (Stdio::null(), Stdio::null()),
    };
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("pod {ns}/{name}: cannot start {argv:?}: {e}"));
    st.procs.push(PodProcess {
        namespace: ns.into(),
        name: name.into(),
        child,
    });
}

/// Stops a process: SIGTERM to its group, up to `grace` to exit, then SIGKILL; reaped.
pub(super) fn stop(mut p: PodProcess, grace: Duration) {
    let (pid, t0) = (p.child.id(), Instant::now());
    signal_group(pid, "TERM");
    loop {
        match p.child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() < grace => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                break;
            }
        }
    }
    signal_group(pid, "KILL");
}

/// Marks the pod deleted now and removes it once its process stopped (on a thread, so the
/// API answers at once, as the real one does with the pod still terminating).
pub(super) fn delete_later(state: &Shared, ns: &str, name: &str) -> Option<Value> {
    let (pod, proc_) = {
        let mut st = lock(state);
        let pod = st
            .pods
            .iter_mut()
            .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == ns)?;
        if pod["metadata"]["deletionTimestamp"].is_null() {
            pod["metadata"]["deletionTimestamp"] = json!(now());
        }
        let pod = pod.clone();
        let at = st
            .procs
            .iter()
            .position(|p| p.namespace == ns && p.name == name);
        (pod, at.map(|i| st.procs.remove(i)))
    };
    // By uid: a pod of the same name created meanwhile is another pod.
    let (state, uid) = (state.clone(), pod["metadata"]["uid"].clone());
    let gone = pod.clone();
    std::thread::spawn(move || {
        if let Some(p) = proc_ {
            stop(p, GRACE);
        }
        lock(&state).pods.retain(|o| o["metadata"]["uid"] != uid);
        super::workloads::pod_gone(&state, &gone);
    });
    Some(pod)
}
