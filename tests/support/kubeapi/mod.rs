//! Test support only — never use this outside tests. An in-process Kubernetes API server that
//! speaks the real REST JSON (nodes, pods, secrets, `Status` errors, bearer-token auth) and the
//! real exec protocol: an HTTP/1.1 websocket upgrade negotiating `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`, channel-prefixed binary frames, and the kubelet's `Status` on channel 3.
//! Exec'd commands run for real on this machine (after the test's path substitutions), so a
//! test of the real `cpvault` binary exercises the same client code a cluster would.
//! It also speaks the kubelet's port-forward websocket (`v4.channel.k8s.io`), connecting a
//! pod's ports to loopback here (every test pod is host-network on this machine).
//! Optionally it enforces RBAC for its token (`enforce_rbac`), answering 403 like the real
//! API server for what the given Roles and ClusterRoles do not allow, and answers
//! SelfSubjectAccessReviews from it. StatefulSets scale (their pods come and go, and a pod of
//! theirs that is deleted comes back as a new one), pods are created and deleted, and a pod's
//! command runs for real on its volumes' sandbox dirs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::encoding::base64;
use rest::{get, list, now, ok, parse_query, status, uid, upsert};

// The exec websocket protocol and running the exec'd commands.
mod exec;
// The port-forward websocket protocol, connecting a pod's ports on loopback.
mod portforward;
// Pod processes: a pod's command run for real, stopped on delete; claims as sandbox dirs.
mod pods;
// RBAC: Roles, ClusterRoles and their bindings deciding what the token may do.
pub mod rbac;
// StatefulSets and their scale, pod create/delete, SelfSubjectAccessReviews.
mod workloads;
// The REST objects (get, list, label selectors) and `Status` responses.
mod rest;
#[cfg(test)]
mod tests;

type Body = Full<Bytes>;
type Shared = Arc<Mutex<State>>;

/// One exec request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRecord {
    pub namespace: String,
    pub pod: String,
    /// The `container` query parameter, as the client sent it.
    pub container: Option<String>,
    /// The argv as the client sent it, before `map_exec` substitutions.
    pub command: Vec<String>,
    /// The subprotocol negotiated; None if the request was refused before the upgrade.
    pub protocol: Option<String>,
    /// None while running, and for requests refused, commands that failed to start, and
    /// commands killed because the client went away. Death by signal N reads as 128+N.
    pub exit_code: Option<i32>,
}

/// One port-forward request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRecord {
    pub namespace: String,
    pub pod: String,
    /// The ports asked for.
    pub ports: Vec<u16>,
    /// The subprotocol negotiated; None if the request was refused before the upgrade.
    pub protocol: Option<String>,
}

#[derive(Default)]
struct State {
    token: String,
    nodes: Vec<Value>,
    pods: Vec<Value>,
    secrets: Vec<Value>,
    maps: Vec<(String, String)>,
    /// As `maps`, for execs into one pod (namespace, pod, from, to); applied first.
    pod_maps: Vec<(String, String, String, String)>,
    /// Pods (namespace, name) whose image has no shell (see `make_distroless`).
    distroless: Vec<(String, String)>,
    /// Images with no shell: pods made later with them run only etcd's binaries.
    distroless_images: Vec<String>,
    execs: Vec<ExecRecord>,
    forwards: Vec<ForwardRecord>,
    requests: Vec<String>,
    /// RBAC in force; `None`: the token may do anything (an admin kubeconfig).
    rbac: Option<rbac::Rbac>,
    /// The Forbidden messages of the requests RBAC refused.
    denied: Vec<String>,
    resource_version: u64,
    statefulsets: Vec<Value>,
    /// A StatefulSet (namespace, name) a "controller" scales back to 1 when the next pod is
    /// created (see `scale_up_on_next_pod`).
    scale_up_on_pod: Option<(String, String)>,
    /// StatefulSets (namespace, name) whose controller no longer replaces a deleted pod
    /// (see `hold_controller`).
    held: Vec<(String, String)>,
    /// Claims standing for sandbox dirs: (namespace, claim, dir).
    volumes: Vec<(String, String, std::path::PathBuf)>,
    /// The running pods' processes.
    procs: Vec<pods::PodProcess>,
    /// Where pod processes log (`NS_POD.log`); none: nowhere.
    pod_logs: Option<std::path::PathBuf>,
}

/// A running test API server; stops on drop.
pub struct KubeApi {
    url: String,
    token: String,
    state: Shared,
    // Last: dropping it stops the server.
    _server: super::http::HttpServer,
}

impl KubeApi {
    /// Binds a free loopback port and serves on a thread with its own runtime.
    pub fn start() -> KubeApi {
        let token = format!("{:032x}", rand::random::<u128>());
        let state: Shared = Arc::new(Mutex::new(State {
            token: token.clone(),
            ..State::default()
        }));
        let shared = state.clone();
        let server =
            super::http::HttpServer::start("kubeapi", move |req| handle(shared.clone(), req));
        KubeApi {
            url: server.url(),
            token,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Writes a kubeconfig (mode 0600) whose current context `context` points at this server.
    pub fn write_kubeconfig(&self, path: &Path, context: &str) {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let yaml = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n\
             users:\n- name: {user}\n  user:\n    token: {token}\n\
             contexts:\n- name: {context}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
             current-context: {context}\npreferences: {{}}\n",
            cluster = q(&format!("{context}-cluster")),
            user = q(&format!("{context}-admin")),
            server = q(&self.url),
            token = q(&self.token),
            context = q(context),
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(yaml.as_bytes()).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Adds (or replaces) a Ready node; `addresses` are (type, address) pairs.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)], addresses: &[(&str, &str)]) {
        let mut st = self.lock();
        let metadata = st.metadata(None, name, labels);
        let addresses: Vec<Value> = addresses
            .iter()
            .map(|(t, a)| json!({"type": t, "address": a}))
            .collect();
        let now = now();
        let node = json!({
            "kind": "Node", "apiVersion": "v1", "metadata": metadata, "spec": {},
            "status": {
                "addresses": addresses,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {"architecture": "amd64", "bootID": uid(),
                    "containerRuntimeVersion": "containerd://2.0.5", "kernelVersion": "6.1.0",
                    "kubeProxyVersion": "", "kubeletVersion": "v1.33.1", "machineID": uid(),
                    "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "systemUUID": uid()}
            }
        });
        upsert(&mut st.nodes, node);
    }

    /// Adds (or replaces) a Running pod with the named containers.
    pub fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        containers: &[&str],
    ) {
        let mut st = self.lock();
        let metadata = st.metadata(Some(namespace), name, labels);
        let image = |c: &str| format!("registry.k8s.io/{c}:test");
        let specs: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": image(c), "imagePullPolicy": "IfNotPresent"}))
            .collect();
        let now = now();
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                json!({"name": c, "image": image(c),
                    "imageID": format!("{}@sha256:{:064x}", image(c), 0),
                    "containerID": format!("containerd://{:064x}", rand::random::<u128>()),
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now}}})
            })
            .collect();
        let pod = json!({
            "kind": "Pod", "apiVersion": "v1", "metadata": metadata,
            "spec": {"containers": specs, "restartPolicy": "Always", "hostNetwork": true},
            "status": {"phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}], "startTime": now, "containerStatuses": statuses,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}
        });
        upsert(&mut st.pods, pod);
    }

    /// Adds (or replaces) an Opaque secret; values are stored base64 like the real API does.
    pub fn add_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) {
        let mut st = self.lock();
        let metadata = st.metadata(Some(namespace), name, &[]);
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(base64(v))))
            .collect();
        let secret = json!({"kind": "Secret", "apiVersion": "v1", "metadata": metadata,
            "type": "Opaque", "data": data});
        upsert(&mut st.secrets, secret);
    }

    /// Adds (or replaces) a StatefulSet (the object as JSON, namespace set here); its pods are
    /// made at once and their commands started.
    pub fn add_statefulset(&self, namespace: &str, sts: Value) {
        workloads::add_statefulset(&self.state, namespace, sts);
    }

    /// The claim `claim` in `namespace` is the dir `dir`: its mount path reads as `dir` in
    /// the command and the execs of every pod mounting it.
    pub fn add_volume(&self, namespace: &str, claim: &str, dir: &Path) {
        let v = (namespace.into(), claim.into(), dir.to_path_buf());
        self.lock().volumes.push(v);
    }

    /// Pod processes log into `dir` from now on.
    pub fn set_pod_logs(&self, dir: &Path) {
        self.lock().pod_logs = Some(dir.to_path_buf());
    }

    /// The stored StatefulSet.
    pub fn statefulset(&self, namespace: &str, name: &str) -> Value {
        let st = self.lock();
        let s = (st.statefulsets.iter())
            .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == namespace);
        s.unwrap_or_else(|| panic!("no statefulset {namespace}/{name}"))
            .clone()
    }

    /// Stands for a controller that manages the StatefulSet: when the next pod is created,
    /// it scales the set back to 1 (and its pod starts).
    pub fn scale_up_on_next_pod(&self, namespace: &str, statefulset: &str) {
        self.lock().scale_up_on_pod = Some((namespace.into(), statefulset.into()));
    }

    /// From now on the StatefulSet's controller does not bring back a pod that is deleted
    /// (as one that is stuck or gone would); scaling still works.
    pub fn hold_controller(&self, namespace: &str, statefulset: &str) {
        self.lock()
            .held
            .push((namespace.into(), statefulset.into()));
    }

    /// The stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        (self.lock().pods.iter())
            .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"] == namespace)
            .cloned()
    }

    /// The StatefulSet's `spec.replicas`.
    pub fn replicas(&self, namespace: &str, name: &str) -> i64 {
        self.statefulset(namespace, name)["spec"]["replicas"]
            .as_i64()
            .unwrap()
    }

    /// The names of the pods in `namespace` (terminating ones included).
    pub fn pod_names(&self, namespace: &str) -> Vec<String> {
        (self.lock().pods.iter())
            .filter(|o| o["metadata"]["namespace"] == namespace)
            .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
            .collect()
    }

    /// Replaces `from` with `to` in every argv element of later execs, in insertion order.
    pub fn map_exec(&self, from: &str, to: &str) {
        self.lock().maps.push((from.into(), to.into()));
    }

    /// As [`KubeApi::map_exec`], only for execs into one pod (applied before the others): e.g.
    /// each etcd pod of an HA control plane reaching its own member at "127.0.0.1:2379".
    pub fn map_exec_in(&self, namespace: &str, pod: &str, from: &str, to: &str) {
        self.lock()
            .pod_maps
            .push((namespace.into(), pod.into(), from.into(), to.into()));
    }

    /// From now on the pod's image is distroless, as etcd's own images are since 3.5.7: only
    /// its binaries (etcd, etcdctl, etcdutl) can be exec'd; anything else (`sh`) fails to
    /// start with the container runtime's "executable file not found".
    pub fn make_distroless(&self, namespace: &str, pod: &str) {
        self.lock().distroless.push((namespace.into(), pod.into()));
    }

    /// From now on `image` is distroless: a pod created with it whose command is not one of
    /// etcd's binaries fails to start (phase Failed, the runtime's StartError), and execs of
    /// anything else in it fail as in [`KubeApi::make_distroless`].
    pub fn make_image_distroless(&self, image: &str) {
        self.lock().distroless_images.push(image.into());
    }

    pub fn execs(&self) -> Vec<ExecRecord> {
        self.lock().execs.clone()
    }

    /// Every port-forward request that passed authentication, in order.
    pub fn forwards(&self) -> Vec<ForwardRecord> {
        self.lock().forwards.clone()
    }

    /// Sets the command line of a container of a stored pod, as its spec would say it (e.g.
    /// etcd's `--listen-client-urls`).
    pub fn set_command(&self, namespace: &str, pod: &str, container: &str, command: &[&str]) {
        let mut st = self.lock();
        let found = st
            .pods
            .iter_mut()
            .find(|o| o["metadata"]["name"] == pod && o["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| panic!("no pod {namespace}/{pod}"));
        let c = found["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == container)
            .unwrap_or_else(|| panic!("no container {container} in {namespace}/{pod}"));
        c["command"] = json!(command);
    }

    /// From now on, the token stands for the ServiceAccount of `rbac` and may do only what its
    /// bindings allow; everything else is answered 403 Forbidden.
    pub fn enforce_rbac(&self, rbac: rbac::Rbac) {
        self.lock().rbac = Some(rbac);
    }

    /// The Forbidden messages of every request RBAC refused, in order.
    pub fn denied(&self) -> Vec<String> {
        self.lock().denied.clone()
    }

    /// "METHOD /path?query" of every request, authorized or not.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut self.lock().procs);
        for p in procs {
            pods::stop(p, std::time::Duration::ZERO);
        }
    }
}

impl State {
    fn metadata(&mut self, namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> Value {
        self.resource_version += 1;
        let mut m = json!({"name": name, "uid": uid(),
            "resourceVersion": self.resource_version.to_string(), "creationTimestamp": now()});
        if let Some(ns) = namespace {
            m["namespace"] = json!(ns);
        }
        if !labels.is_empty() {
            let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
            m["labels"] = json!(labels);
        }
        m
    }
}

// A panicking test thread must not turn every later assertion into a poison error.
fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The 403 response when RBAC is enforced and refuses one of the request's checks.
fn authorize(
    state: &Shared,
    method: &str,
    segments: &[&str],
    query: &[(String, String)],
    websocket: bool,
) -> Option<Response<Body>> {
    // Every authenticated user may ask what it may do (the default system:basic-user role).
    if segments.last() == Some(&"selfsubjectaccessreviews") {
        return None;
    }
    let mut st = lock(state);
    let rbac = st.rbac.as_ref()?;
    let checks = rbac::attributes(method, segments, query, websocket)?;
    let refused = checks.iter().find(|a| !rbac.allows(a))?;
    let message = refused.forbidden_message(&rbac.user());
    let mut details = json!({"kind": refused.resource});
    if let Some(name) = &refused.name {
        details["name"] = json!(name);
    }
    st.denied.push(message.clone());
    Some(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some(details),
    ))
}

async fn handle(state: Shared, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authorized = {
        let mut st = lock(&state);
        st.requests.push(format!("{} {target}", req.method()));
        let expected = format!("Bearer {}", st.token);
        req.headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    };
    if !authorized {
        return Ok(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        ));
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().as_str().to_string();
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if let Some(refused) = authorize(&state, &method, &segments, &query, websocket) {
        return Ok(refused);
    }
    let mut body = vec![];
    if matches!(method.as_str(), "POST" | "PUT" | "PATCH") && !websocket {
        use http_body_util::BodyExt;
        while let Some(Ok(frame)) = req.body_mut().frame().await {
            if let Ok(data) = frame.into_data() {
                body.extend_from_slice(&data);
            }
        }
    }
    let response = match (method.as_str(), segments.as_slice()) {
        ("GET", ["apis", "apps", "v1", "namespaces", ns, "statefulsets", name]) => {
            workloads::get_statefulset(&state, ns, name)
        }
        ("PATCH", ["apis", "apps", "v1", "namespaces", ns, "statefulsets", name]) => {
            workloads::patch_statefulset(&state, ns, name, &body)
        }
        (
            m @ ("GET" | "PATCH" | "PUT"),
            ["apis", "apps", "v1", "namespaces", ns, "statefulsets", name, "scale"],
        ) => workloads::scale(&state, m, ns, name, &body),
        ("POST", ["api", "v1", "namespaces", ns, "pods"]) => {
            workloads::create_pod(&state, ns, &body)
        }
        ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
            workloads::delete_pod(&state, ns, name)
        }
        ("POST", ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]) => {
            workloads::access_review(&state, &body)
        }
        ("GET" | "POST", ["api", "v1", "namespaces", ns, "pods", pod, "exec"]) => {
            exec::exec(&state, ns, pod, &query, &mut req)
        }
        ("GET" | "POST", ["api", "v1", "namespaces", ns, "pods", pod, "portforward"]) => {
            portforward::forward(&state, ns, pod, &query, &mut req)
        }
        ("GET", ["version"]) => ok(
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1",
            "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828", "gitTreeState": "clean",
            "buildDate": "2025-05-15T08:19:08Z", "goVersion": "go1.24.2", "compiler": "gc",
            "platform": "linux/amd64"}),
        ),
        ("GET", ["api", "v1", "nodes"]) => list(&state, "nodes", None, &query),
        ("GET", ["api", "v1", "nodes", name]) => get(&state, "nodes", None, name),
        ("GET", ["api", "v1", kind @ ("pods" | "secrets")]) => list(&state, kind, None, &query),
        ("GET", ["api", "v1", "namespaces", ns, kind @ ("pods" | "secrets")]) => {
            list(&state, kind, Some(ns), &query)
        }
        ("GET", ["api", "v1", "namespaces", ns, kind @ ("pods" | "secrets"), name]) => {
            get(&state, kind, Some(ns), name)
        }
        ("GET", _) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        ),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        ),
    };
    Ok(response)
}
