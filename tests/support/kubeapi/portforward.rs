//! The port-forward half of the test API server: validates a `pods/NAME/portforward` request
//! like the API server, upgrades it to a websocket speaking the kubelet's
//! `v4.channel.k8s.io` port-forward protocol — per requested port a data channel (2i) and an
//! error channel (2i+1), each opened by a frame carrying the port as two little-endian bytes
//! — and connects each port to localhost inside the pod. Every test pod is host-network on
//! this machine, so that is loopback here. A port nothing listens on gets the container
//! runtime's error on its error channel, as the kubelet sends it, and the connection closes
//! once every port is done. SPDY, and its websocket tunnel (`SPDY/3.1+portforward.k8s.io`),
//! are not modelled. A client that goes away takes its connections with it.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::rest::{bad_request, not_found, respond, websocket_handshake};
use super::{lock, Body, ForwardRecord, Shared};

/// Largest payload per websocket message from a port.
const FRAME: usize = 32 * 1024;
/// The kubelet's port-forward websocket speaks only v4 (binary) here.
const PROTOCOL: &str = "v4.channel.k8s.io";

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Validates a port-forward request like the API server does, then upgrades and forwards.
pub(super) fn forward(
    state: &Shared,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
    req: &mut Request<Incoming>,
) -> Response<Body> {
    let mut ports = vec![];
    for (_, v) in query.iter().filter(|(k, _)| k == "ports") {
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return bad_request(&format!("invalid port {p:?}: must be 1-65535")),
            }
        }
    }
    let (index, found) = {
        let mut st = lock(state);
        st.forwards.push(ForwardRecord {
            namespace: ns.into(),
            pod: pod.into(),
            ports: ports.clone(),
            protocol: None,
        });
        let found = st
            .pods
            .iter()
            .any(|o| o["metadata"]["name"] == pod && o["metadata"]["namespace"] == ns);
        (st.forwards.len() - 1, found)
    };
    if !found {
        return not_found("pods", pod);
    }
    if ports.is_empty() {
        return bad_request("query parameter \"ports\" is required");
    }
    let (accept, offered) = match websocket_handshake(req.headers()) {
        Ok(h) => h,
        Err(refused) => return *refused,
    };
    if !offered.iter().any(|o| o == PROTOCOL) {
        return bad_request(&format!(
            "requested protocol(s) are not supported: {offered:?}; supports [\"{PROTOCOL}\"]"
        ));
    }
    lock(state).forwards[index].protocol = Some(PROTOCOL.into());
    let upgrade = hyper::upgrade::on(&mut *req);
    let pod_id = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            session(ws, &pod_id, &ports).await;
        }
    });
    respond(
        StatusCode::SWITCHING_PROTOCOLS,
        &[
            (header::UPGRADE, "websocket"),
            (header::CONNECTION, "Upgrade"),
            (header::SEC_WEBSOCKET_ACCEPT, &accept),
            (header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL),
        ],
        Bytes::new(),
    )
}

/// What a port's reader hands the websocket writer.
enum Out {
    Frame(Vec<u8>),
    Ended,
}

async fn session(ws: Ws, pod_id: &str, ports: &[u16]) {
    let (mut sink, stream) = ws.split();
    // As the kubelet: every channel opens with its port, data and error alike.
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            let mut frame = vec![ch as u8];
            frame.extend_from_slice(&port.to_le_bytes());
            if sink.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
    }
    let (tx, mut rx) = mpsc::channel::<Out>(4);
    let mut readers = JoinSet::new();
    let mut writers = vec![];
    for (i, port) in ports.iter().enumerate() {
        match TcpStream::connect(("127.0.0.1", *port)).await {
            Ok(s) => {
                let (r, w) = s.into_split();
                readers.spawn(pump_from_port(r, (2 * i) as u8, tx.clone()));
                writers.push(Some(w));
            }
            Err(e) => {
                writers.push(None);
                let mut frame = vec![(2 * i + 1) as u8];
                frame.extend_from_slice(refused(pod_id, *port, &e).as_bytes());
                if sink.send(Message::binary(frame)).await.is_err() {
                    return;
                }
            }
        }
    }
    drop(tx);
    let mut live = readers.len();
    // The client's side runs in its own task, so a port that stops reading never stops
    // the others' bytes from flowing back, and a vanished client is noticed at any time.
    let mut client = tokio::spawn(pump_to_ports(stream, writers));
    while live > 0 {
        let out = tokio::select! {
            // Dropping `readers` closes every connection to the pod's ports.
            _ = &mut client => return,
            out = rx.recv() => out,
        };
        match out {
            Some(Out::Frame(f)) => {
                if sink.send(Message::binary(f)).await.is_err() {
                    return;
                }
            }
            Some(Out::Ended) => live -= 1,
            None => break,
        }
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    // Closing the socket while the client's last frames sit unread would reset the
    // connection under it; wait (bounded) until the client closes its side.
    let _ = tokio::time::timeout(Duration::from_secs(5), client).await;
}

/// The kubelet's error when the container runtime cannot connect to the port in the pod.
fn refused(pod_id: &str, port: u16, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        _ => e.to_string(),
    };
    format!(
        "error forwarding port {port} to pod {pod_id}, uid : failed to execute portforward in \
         network namespace \"host\": failed to connect to localhost:{port} inside namespace \
         \"{pod_id}\", IPv4: dial tcp4 127.0.0.1:{port}: {why} IPv6 dial tcp6 [::1]:{port}: {why} "
    )
}

/// Sends what the port says on its data channel until it closes.
async fn pump_from_port(mut r: OwnedReadHalf, channel: u8, tx: mpsc::Sender<Out>) {
    let mut buf = vec![0u8; FRAME + 1];
    loop {
        buf[0] = channel;
        match r.read(&mut buf[1..]).await {
            Ok(n) if n > 0 => {
                if tx.send(Out::Frame(buf[..=n].to_vec())).await.is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let _ = tx.send(Out::Ended).await;
}

/// Writes each data channel's bytes to its port until the client closes the websocket or
/// goes away; the error channels are the server's to write.
async fn pump_to_ports(mut stream: SplitStream<Ws>, mut writers: Vec<Option<OwnedWriteHalf>>) {
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Binary(data) => data,
            Message::Close(_) => return,
            _ => continue,
        };
        let Some((&ch, rest)) = data.split_first() else {
            continue;
        };
        if ch % 2 != 0 || rest.is_empty() {
            continue;
        }
        if let Some(slot) = writers.get_mut(usize::from(ch / 2)) {
            if let Some(w) = slot {
                if w.write_all(rest).await.is_err() {
                    *slot = None;
                }
            }
        }
    }
}
