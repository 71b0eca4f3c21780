//! The exec half of the test API server: validates an exec request like the API server,
//! upgrades it to a websocket (`v5.channel.k8s.io` or `v4.channel.k8s.io`), runs the command
//! for real on this machine after the test's substitutions, and streams its channels and the
//! kubelet's `Status` on channel 3. A client that goes away takes its command with it; a
//! command is never left running past its session.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::rest::{bad_request, not_found, param, respond, websocket_handshake};
use super::{lock, Body, ExecRecord, Shared};

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

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Validates an exec request like the API server does, then upgrades and runs the command.
pub(super) fn exec(
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
    let (index, containers, argv, absent) = {
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
        // The pod's volumes (sandbox dirs), then the test's substitutions.
        let argv: Vec<String> = match found {
            Some(p) => super::pods::substitute(&st, p, requested.as_deref(), &command),
            None => command.clone(),
        };
        // A distroless image holds only its own binaries.
        let distroless = st.distroless.iter().any(|(n, p)| n == ns && p == pod)
            || found.is_some_and(|p| super::pods::distroless(&st, p, requested.as_deref()));
        let absent = distroless && !command.first().is_some_and(|c| super::pods::own_binary(c));
        (st.execs.len() - 1, containers, argv, absent)
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
    let (accept, offered) = match websocket_handshake(req.headers()) {
        Ok(h) => h,
        Err(refused) => return *refused,
    };
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
        absent,
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
    /// argv[0] is not in the image: the start fails as the runtime says.
    absent: bool,
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
        let spawned = if self.absent {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        } else {
            tokio::process::Command::new(&self.argv[0])
                .args(&self.argv[1..])
                .current_dir("/")
                .stdin(pipe(self.stdin))
                .stdout(pipe(self.stdout))
                .stderr(pipe(self.stderr))
                .kill_on_drop(true)
                .spawn()
        };
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
