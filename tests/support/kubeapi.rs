//! Test support only — never use this outside tests. An in-process Kubernetes API server that
//! speaks the real REST JSON (nodes, pods, secrets, `Status` errors, bearer-token auth) and the
//! real exec protocol: an HTTP/1.1 websocket upgrade negotiating `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`, channel-prefixed binary frames, and the kubelet's `Status` on channel 3.
//! Exec'd commands run for real on this machine (after the test's path substitutions), so a
//! test of the real `cpvault` binary exercises the same client code a cluster would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest stdout/stderr payload per websocket message; reading no more than this before
/// awaiting the send keeps memory bounded however much a command writes.
const FRAME: usize = 32 * 1024;
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;
/// Subprotocols we accept, best first. v1–v3 report errors differently and kube offers only
/// these two, so the older ones are refused rather than half-implemented.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

type Body = Full<Bytes>;
type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
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

#[derive(Default)]
struct State {
    token: String,
    nodes: Vec<Value>,
    pods: Vec<Value>,
    secrets: Vec<Value>,
    maps: Vec<(String, String)>,
    execs: Vec<ExecRecord>,
    requests: Vec<String>,
    resource_version: u64,
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

    /// Replaces `from` with `to` in every argv element of later execs, in insertion order.
    pub fn map_exec(&self, from: &str, to: &str) {
        self.lock().maps.push((from.into(), to.into()));
    }

    pub fn execs(&self) -> Vec<ExecRecord> {
        self.lock().execs.clone()
    }

    /// "METHOD /path?query" of every request, authorized or not.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
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

fn upsert(list: &mut Vec<Value>, obj: Value) {
    let key = |o: &Value| {
        (
            o["metadata"]["namespace"].clone(),
            o["metadata"]["name"].clone(),
        )
    };
    list.retain(|o| key(o) != key(&obj));
    list.push(obj);
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn uid() -> String {
    let h = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    let response = match (method.as_str(), segments.as_slice()) {
        ("GET" | "POST", ["api", "v1", "namespaces", ns, "pods", pod, "exec"]) => {
            exec(&state, ns, pod, &query, &mut req)
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

fn objects<'a>(st: &'a State, kind: &str) -> &'a [Value] {
    match kind {
        "nodes" => &st.nodes,
        "pods" => &st.pods,
        _ => &st.secrets,
    }
}

fn get(state: &Shared, kind: &str, ns: Option<&str>, name: &str) -> Response<Body> {
    let st = lock(state);
    let found = objects(&st, kind).iter().find(|o| {
        o["metadata"]["name"] == name && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns)
    });
    match found {
        Some(o) => ok(o),
        None => not_found(kind, name),
    }
}

fn list(
    state: &Shared,
    kind: &str,
    ns: Option<&str>,
    query: &[(String, String)],
) -> Response<Body> {
    if query
        .iter()
        .any(|(k, _)| k == "fieldSelector" || k == "watch")
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "fieldSelector and watch are not supported by the test API server",
            None,
        );
    }
    let selector = match parse_selector(param(query, "labelSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e, None),
    };
    let st = lock(state);
    let items: Vec<Value> = objects(&st, kind)
        .iter()
        .filter(|o| ns.is_none_or(|ns| o["metadata"]["namespace"] == ns))
        .filter(|o| selector.iter().all(|r| r.matches(&o["metadata"]["labels"])))
        .map(|o| {
            // The real server leaves kind and apiVersion off the items of a list.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let list_kind = match kind {
        "nodes" => "NodeList",
        "pods" => "PodList",
        _ => "SecretList",
    };
    ok(&json!({"kind": list_kind, "apiVersion": "v1",
        "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items}))
}

enum Requirement {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let value = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Eq(k, v) => value(k) == Some(v),
            Requirement::Ne(k, v) => value(k) != Some(v),
            Requirement::Exists(k) => value(k).is_some(),
            Requirement::Absent(k) => value(k).is_none(),
        }
    }
}

/// Equality-based selectors and existence; set-based `in (…)` would need a real parser, and
/// refusing it loudly beats silently matching the wrong objects.
fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let valid = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let mut out = vec![];
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (req, key) = if let Some((k, v)) = term.split_once("!=") {
            (Requirement::Ne(k.trim().into(), v.trim().into()), k.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (Requirement::Eq(k.trim().into(), v.trim().into()), k.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            (Requirement::Absent(k.trim().into()), k.trim())
        } else {
            (Requirement::Exists(term.into()), term)
        };
        if !valid(key) {
            return Err(format!(
                "unable to parse requirement: invalid label key {term:?}"
            ));
        }
        out.push(req);
    }
    Ok(out)
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn ok(body: &Value) -> Response<Body> {
    json_response(StatusCode::OK, body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut r = respond(code, &[], Bytes::from(body.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn respond(code: StatusCode, headers: &[(HeaderName, &str)], body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(name.clone(), v);
        }
    }
    r
}

fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response<Body> {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(code, &body)
}

fn not_found(kind: &str, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
        Some(json!({"name": name, "kind": kind})),
    )
}

fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Validates an exec request like the API server does, then upgrades and runs the command.
fn exec(
    state: &Shared,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
    req: &mut Request<Incoming>,
) -> Response<Body> {
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let requested = param(query, "container").map(String::from);
    let flag = |k: &str| param(query, k).is_some_and(parse_bool);
    let (stdin, stdout, stderr) = (flag("stdin"), flag("stdout"), flag("stderr"));
    let (index, containers, argv) = {
        let mut st = lock(state);
        st.execs.push(ExecRecord {
            namespace: ns.into(),
            pod: pod.into(),
            container: requested.clone(),
            command: command.clone(),
            protocol: None,
            exit_code: None,
        });
        let found = st
            .pods
            .iter()
            .find(|o| o["metadata"]["name"] == pod && o["metadata"]["namespace"] == ns);
        let containers: Option<Vec<String>> = found.map(|p| {
            let specs = p["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            specs
                .iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        });
        let argv: Vec<String> = command
            .iter()
            .map(|a| {
                st.maps
                    .iter()
                    .fold(a.clone(), |a, (from, to)| a.replace(from, to))
            })
            .collect();
        (st.execs.len() - 1, containers, argv)
    };
    let Some(containers) = containers else {
        return not_found("pods", pod);
    };
    match &requested {
        Some(c) if !containers.contains(c) => {
            return bad_request(&format!("container {c} is not valid for pod {pod}"));
        }
        None if containers.len() != 1 => {
            return bad_request(&format!(
                "a container name must be specified for pod {pod}, choose one of: [{}]",
                containers.join(" ")
            ));
        }
        _ => {}
    }
    if command.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }
    if !(stdin || stdout || stderr) {
        return bad_request("you must specify at least one of stdin, stdout, stderr");
    }
    if flag("tty") {
        return bad_request("tty is not supported by the test API server");
    }
    let headers = req.headers();
    let is_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let (true, Some(accept)) = (is_websocket, key) else {
        return bad_request("Upgrade request required");
    };
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(protocol) = PROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        return bad_request(&format!(
            "requested protocol(s) are not supported: {offered:?}; supports {PROTOCOLS:?}"
        ));
    };
    lock(state).execs[index].protocol = Some(protocol.into());
    let upgrade = hyper::upgrade::on(&mut *req);
    let session = Session {
        state: state.clone(),
        index,
        argv,
        stdin,
        stdout,
        stderr,
        v5: protocol == PROTOCOLS[0],
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            session.run(ws).await;
        }
    });
    respond(
        StatusCode::SWITCHING_PROTOCOLS,
        &[
            (header::UPGRADE, "websocket"),
            (header::CONNECTION, "Upgrade"),
            (header::SEC_WEBSOCKET_ACCEPT, &accept),
            (header::SEC_WEBSOCKET_PROTOCOL, protocol),
        ],
        Bytes::new(),
    )
}

struct Session {
    state: Shared,
    index: usize,
    argv: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    v5: bool,
}

impl Session {
    async fn run(self, ws: Ws) {
        let (mut sink, stream) = ws.split();
        // The kubelet announces the stream with an empty frame on the lowest writable channel.
        let first = if self.stdout {
            STDOUT
        } else if self.stderr {
            STDERR
        } else {
            ERROR
        };
        if sink.send(Message::binary(vec![first])).await.is_err() {
            return;
        }
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let spawned = tokio::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .current_dir("/")
            .stdin(pipe(self.stdin))
            .stdout(pipe(self.stdout))
            .stderr(pipe(self.stderr))
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = sink
                    .send(status_frame(&start_failure(&self.argv[0], &e)))
                    .await;
                let _ = sink.send(close_frame()).await;
                // Drains the client's side until it closes, as below.
                let linger = pump_stdin(stream, None, false);
                let _ = tokio::time::timeout(Duration::from_secs(5), linger).await;
                return;
            }
        };
        // The client's side runs in its own task so that a child not reading its stdin never
        // stops its output from flowing, and so a vanished client is noticed at any time.
        let mut client = tokio::spawn(pump_stdin(stream, child.stdin.take(), self.v5));
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        while out.is_some() || err.is_some() {
            let frame = tokio::select! {
                _ = &mut client => return kill(child).await,
                f = read_frame(&mut out, STDOUT) => f,
                f = read_frame(&mut err, STDERR) => f,
            };
            if let Some(frame) = frame {
                if sink.send(Message::Binary(frame)).await.is_err() {
                    return kill(child).await;
                }
            }
        }
        let exit = tokio::select! {
            _ = &mut client => return kill(child).await,
            exit = child.wait() => exit,
        };
        let code = match exit {
            Ok(s) => s.code().or(s.signal().map(|n| 128 + n)),
            Err(_) => None,
        };
        lock(&self.state).execs[self.index].exit_code = code;
        let _ = sink.send(status_frame(&exit_status(code))).await;
        let _ = sink.send(close_frame()).await;
        // Closing the socket while the client's last frames sit unread would reset the
        // connection under it; wait (bounded) until the client closes its side.
        let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
    }
}

async fn kill(mut child: Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Reads up to one frame from `pipe` (never resolving once it is gone), clearing it at EOF.
async fn read_frame<R: AsyncRead + Unpin>(pipe: &mut Option<R>, channel: u8) -> Option<Bytes> {
    let Some(r) = pipe.as_mut() else {
        return std::future::pending().await;
    };
    let mut buf = vec![0u8; FRAME + 1];
    buf[0] = channel;
    match r.read(&mut buf[1..]).await {
        Ok(n) if n > 0 => {
            buf.truncate(n + 1);
            Some(Bytes::from(buf))
        }
        _ => {
            *pipe = None;
            None
        }
    }
}

/// Feeds channel 0 to the child until the client closes the websocket or goes away.
async fn pump_stdin(mut stream: SplitStream<Ws>, mut stdin: Option<ChildStdin>, v5: bool) {
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Binary(data) => data,
            Message::Close(_) => return,
            _ => continue,
        };
        match (data.first(), data.get(1)) {
            (Some(&STDIN), _) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data[1..]).await.is_err() {
                        stdin = None;
                    }
                }
            }
            // v5's "close stream" signal; dropping the pipe gives the child EOF.
            (Some(&CLOSE), Some(&STDIN)) if v5 => stdin = None,
            _ => {}
        }
    }
}

fn status_frame(status: &Value) -> Message {
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    Message::binary(frame)
}

fn close_frame() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

fn exit_status(code: Option<i32>) -> Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(n) => json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {n}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": n.to_string()}]}}),
        None => json!({"metadata": {}, "status": "Failure",
            "message": "command terminated without an exit code", "reason": "InternalError"}),
    }
}

/// The error containerd/runc give the kubelet when the process cannot be started.
fn start_failure(argv0: &str, e: &std::io::Error) -> Value {
    let why = match e.kind() {
        std::io::ErrorKind::NotFound if argv0.contains('/') => {
            format!("stat {argv0}: no such file or directory")
        }
        std::io::ErrorKind::NotFound => "executable file not found in $PATH".to_string(),
        _ => e.to_string(),
    };
    let message = format!(
        "failed to exec in container: failed to start exec \"{:064x}\": OCI runtime exec failed: \
         exec failed: unable to start container process: exec: \"{argv0}\": {why}: unknown",
        rand::random::<u128>()
    );
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
        "details": {"causes": [{"message": message}]}, "code": 500})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod, Secret};
    use kube::api::{Api, AttachParams, AttachedProcess, ListParams};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn client(api: &KubeApi, dir: &Path) -> kube::Client {
        let path = dir.join("kubeconfig");
        api.write_kubeconfig(&path, "test-ctx");
        client_from(&path).await
    }

    async fn client_from(path: &Path) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(path).unwrap();
        let opts = kube::config::KubeConfigOptions::default();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    fn api_status(e: kube::Error) -> kube::core::Status {
        match e {
            kube::Error::Api(s) => *s,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    /// Reads stdout and stderr to the end concurrently, then the status.
    async fn collect(
        mut p: AttachedProcess,
    ) -> (
        Vec<u8>,
        Vec<u8>,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
    ) {
        let status = p.take_status().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (stdout, stderr) = (p.stdout(), p.stderr());
        let read_out = async {
            if let Some(mut r) = stdout {
                r.read_to_end(&mut out).await.unwrap();
            }
        };
        let read_err = async {
            if let Some(mut r) = stderr {
                r.read_to_end(&mut err).await.unwrap();
            }
        };
        tokio::join!(read_out, read_err);
        let status = status.await.expect("a status on channel 3");
        p.join().await.unwrap();
        (out, err, status)
    }

    #[test]
    fn rest_objects_selectors_errors_and_auth() {
        let api = KubeApi::start();
        api.add_node(
            "cp1",
            &[("node-role.kubernetes.io/control-plane", "")],
            &[("InternalIP", "127.0.0.1")],
        );
        api.add_node(
            "worker1",
            &[("kubernetes.io/os", "linux")],
            &[("InternalIP", "10.0.0.2")],
        );
        api.add_pod(
            "kube-system",
            "etcd-cp1",
            &[("component", "etcd"), ("tier", "control-plane")],
            &["etcd"],
        );
        api.add_pod(
            "kube-system",
            "kube-apiserver-cp1",
            &[("component", "kube-apiserver")],
            &["kube-apiserver"],
        );
        let secret: &[u8] = b"\x00\x01 binary \xff secret!";
        api.add_secret(
            "kube-system",
            "cpvault",
            &[("age.key", secret), ("e", b""), ("two", b"ab")],
        );
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let c = client(&api, dir.path()).await;
            let mode = std::fs::metadata(dir.path().join("kubeconfig"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);

            let nodes: Api<Node> = Api::all(c.clone());
            let cp = nodes
                .list(&ListParams::default().labels("node-role.kubernetes.io/control-plane"))
                .await
                .unwrap();
            let names: Vec<_> = cp
                .items
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            assert_eq!(names, ["cp1"]);
            assert!(cp.metadata.resource_version.is_some());
            let addr = &cp.items[0]
                .status
                .as_ref()
                .unwrap()
                .addresses
                .as_ref()
                .unwrap()[0];
            assert_eq!(
                (addr.type_.as_str(), addr.address.as_str()),
                ("InternalIP", "127.0.0.1")
            );
            let others = nodes
                .list(&ListParams::default().labels("!node-role.kubernetes.io/control-plane"))
                .await
                .unwrap();
            assert_eq!(others.items.len(), 1);
            assert_eq!(
                nodes
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len(),
                2
            );
            assert_eq!(
                nodes.get("worker1").await.unwrap().metadata.name.as_deref(),
                Some("worker1")
            );

            let pods: Api<Pod> = Api::namespaced(c.clone(), "kube-system");
            let etcd = pods
                .list(&ListParams::default().labels("component=etcd,tier=control-plane"))
                .await
                .unwrap();
            assert_eq!(etcd.items.len(), 1);
            let pod = &etcd.items[0];
            assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
            assert_eq!(pod.spec.as_ref().unwrap().containers[0].name, "etcd");
            assert_eq!(
                pod.status.as_ref().unwrap().phase.as_deref(),
                Some("Running")
            );
            let none = pods
                .list(&ListParams::default().labels("component!=etcd,component!=kube-apiserver"))
                .await
                .unwrap();
            assert!(none.items.is_empty());
            let elsewhere: Api<Pod> = Api::namespaced(c.clone(), "default");
            assert!(elsewhere
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty());

            let secrets: Api<Secret> = Api::namespaced(c.clone(), "kube-system");
            let s = secrets.get("cpvault").await.unwrap();
            let data = s.data.unwrap();
            assert_eq!(data["age.key"].0, secret);
            assert!(data["e"].0.is_empty());
            assert_eq!(data["two"].0, b"ab");

            let missing = api_status(pods.get("nope").await.unwrap_err());
            assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
            assert_eq!(missing.message, "pods \"nope\" not found");
            let missing = api_status(secrets.get("nope").await.unwrap_err());
            assert_eq!(missing.message, "secrets \"nope\" not found");

            let bad = dir.path().join("bad-kubeconfig");
            let text = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
            std::fs::write(&bad, text.replace(api.token(), "wrong-token")).unwrap();
            let denied = api_status(
                Api::<Node>::all(client_from(&bad).await)
                    .list(&ListParams::default())
                    .await
                    .unwrap_err(),
            );
            assert_eq!((denied.code, denied.reason.as_str()), (401, "Unauthorized"));
        });
        let requests = api.requests();
        assert!(
            requests.iter().any(|r| r.starts_with("GET /api/v1/nodes?")
                && r.contains("labelSelector=node-role.kubernetes.io%2Fcontrol-plane")),
            "{requests:?}"
        );
        assert!(
            requests.contains(&"GET /api/v1/namespaces/kube-system/secrets/cpvault".to_string()),
            "{requests:?}"
        );
    }

    #[test]
    fn exec_streams_statuses_stdin_and_mapping() {
        let api = KubeApi::start();
        api.add_pod(
            "kube-system",
            "etcd-cp1",
            &[("component", "etcd")],
            &["etcd"],
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, b"mapped file content\n").unwrap();
        api.map_exec("/etc/kubernetes/pki/etcd", dir.path().to_str().unwrap());
        runtime().block_on(async {
            let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "kube-system");
            let etcd = || AttachParams::default().container("etcd");
            let ap = etcd();

            let p = pods
                .exec(
                    "etcd-cp1",
                    ["sh", "-c", "echo out; echo err >&2; exit 3"],
                    &ap,
                )
                .await
                .unwrap();
            let (out, err, status) = collect(p).await;
            assert_eq!(
                (out.as_slice(), err.as_slice()),
                (&b"out\n"[..], &b"err\n"[..])
            );
            assert_eq!(status.status.as_deref(), Some("Failure"));
            assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
            let cause = &status.details.unwrap().causes.unwrap()[0];
            assert_eq!(
                (cause.reason.as_deref(), cause.message.as_deref()),
                (Some("ExitCode"), Some("3"))
            );

            // Container omitted: the pod's only container is used.
            let p = pods
                .exec("etcd-cp1", ["true"], &AttachParams::default())
                .await
                .unwrap();
            assert_eq!(collect(p).await.2.status.as_deref(), Some("Success"));

            let started = std::time::Instant::now();
            let mut p = pods
                .exec(
                    "etcd-cp1",
                    ["head", "-c", "50000000", "/dev/zero"],
                    &etcd().stderr(false),
                )
                .await
                .unwrap();
            let status = p.take_status().unwrap();
            let mut stdout = p.stdout().unwrap();
            let (mut total, mut buf) = (0usize, vec![0u8; 64 * 1024]);
            loop {
                let n = stdout.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf[..n].iter().all(|&b| b == 0));
                total += n;
            }
            assert_eq!(total, 50_000_000);
            assert_eq!(status.await.unwrap().status.as_deref(), Some("Success"));
            eprintln!("50 MB through exec in {:?}", started.elapsed());

            let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let mut p = pods
                .exec("etcd-cp1", ["cat"], &etcd().stdin(true))
                .await
                .unwrap();
            let mut stdin = p.stdin().unwrap();
            let to_send = input.clone();
            let writer = tokio::spawn(async move {
                stdin.write_all(&to_send).await.unwrap();
                stdin.shutdown().await.unwrap();
            });
            let (out, err, status) = collect(p).await;
            writer.await.unwrap();
            assert!(
                out == input,
                "cat echoed {} bytes of {}",
                out.len(),
                input.len()
            );
            assert!(err.is_empty());
            assert_eq!(status.status.as_deref(), Some("Success"));

            let p = pods
                .exec("etcd-cp1", ["cat", "/etc/kubernetes/pki/etcd/ca.crt"], &ap)
                .await
                .unwrap();
            assert_eq!(collect(p).await.0, b"mapped file content\n");

            let p = pods
                .exec("etcd-cp1", ["no-such-tool-cpvault"], &ap)
                .await
                .unwrap();
            let status = collect(p).await.2;
            assert_eq!(status.status.as_deref(), Some("Failure"));
            assert!(status
                .message
                .unwrap()
                .contains("executable file not found in $PATH"));

            // A client that goes away takes its command with it.
            let mut p = pods
                .exec("etcd-cp1", ["sh", "-c", "echo $$; exec sleep 60"], &ap)
                .await
                .unwrap();
            let mut line = vec![0u8; 32];
            let n = p.stdout().unwrap().read(&mut line).await.unwrap();
            let pid = String::from_utf8_lossy(&line[..n]).trim().to_string();
            assert!(Path::new(&format!("/proc/{pid}")).exists());
            drop(p);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "sleep {pid} outlived its client"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let execs = api.execs();
        assert_eq!(
            execs[0].command,
            ["sh", "-c", "echo out; echo err >&2; exit 3"]
        );
        assert_eq!(execs[0].exit_code, Some(3));
        assert_eq!(execs[0].container.as_deref(), Some("etcd"));
        assert_eq!(execs[0].protocol.as_deref(), Some("v5.channel.k8s.io"));
        assert_eq!(execs[1].container, None);
        let mapped = execs
            .iter()
            .find(|e| e.command[0] == "cat" && e.command.len() == 2)
            .unwrap();
        assert_eq!(
            mapped.command[1], "/etc/kubernetes/pki/etcd/ca.crt",
            "records the original argv"
        );
        assert_eq!(mapped.exit_code, Some(0));
        assert_eq!(execs.last().unwrap().exit_code, None);
    }

    #[test]
    fn exec_rejects_unknown_pod_and_container() {
        let api = KubeApi::start();
        api.add_pod("kube-system", "etcd-cp1", &[], &["etcd"]);
        api.add_pod("kube-system", "two", &[], &["etcd", "sidecar"]);
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let pods: Api<Pod> = Api::namespaced(client(&api, dir.path()).await, "kube-system");
            let ap = AttachParams::default().container("nope");
            let e = api_status(pods.exec("etcd-cp1", ["true"], &ap).await.err().unwrap());
            assert_eq!(e.code, 400);
            assert_eq!(e.message, "container nope is not valid for pod etcd-cp1");
            let e = api_status(
                pods.exec("two", ["true"], &AttachParams::default())
                    .await
                    .err()
                    .unwrap(),
            );
            assert_eq!(
                e.message,
                "a container name must be specified for pod two, choose one of: [etcd sidecar]"
            );
            let e = api_status(
                pods.exec("ghost", ["true"], &AttachParams::default())
                    .await
                    .err()
                    .unwrap(),
            );
            assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
        });
        assert!(api
            .execs()
            .iter()
            .all(|e| e.exit_code.is_none() && e.protocol.is_none()));
    }
}
