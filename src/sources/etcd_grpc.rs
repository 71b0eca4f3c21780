//! Direct etcd source: `Maintenance.Snapshot` over gRPC, plain or with mutual TLS. The
//! snapshot streams from the server straight into the archive writer; only the first chunk
//! is read up front, because it tells the snapshot's exact size (etcd reports the bytes still
//! to come with every chunk, and appends a 32-byte sha256 trailer the writer then checks).
//! This module never writes the snapshot anywhere and never retries a half-sent stream: a
//! broken stream fails the backup, which then commits nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::{bridge, SourceError};
use crate::archive::manifest::{EntryKind, EtcdInfo};
use crate::archive::writer::SourceEntry;

/// Where and how to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdEndpoint {
    /// Endpoint URLs (`https://host:2379` or `http://…`), tried in order.
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the server certificate.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key: Option<PathBuf>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|e| SourceError::Etcd {
        endpoint: String::new(),
        message: format!("cannot read {flag} '{}': {e}", path.display()),
        fix: "check the path and that cpvault may read it",
    })
}

fn options(ep: &EtcdEndpoint) -> Result<ConnectOptions, SourceError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(20));
    let tls_wanted = ep.cacert.is_some() || ep.cert.is_some() || ep.key.is_some();
    if !tls_wanted {
        return Ok(opts);
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &ep.cacert {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem("--etcd-cacert", ca)?));
    }
    match (&ep.cert, &ep.key) {
        (Some(c), Some(k)) => {
            // The key is a secret: it lives only in memory, and only as long as the client.
            let key = zeroize::Zeroizing::new(read_pem("--etcd-key", k)?);
            tls = tls.identity(Identity::from_pem(read_pem("--etcd-cert", c)?, &*key));
        }
        (None, None) => {}
        _ => {
            return Err(SourceError::Etcd {
                endpoint: String::new(),
                message: "--etcd-cert and --etcd-key go together".into(),
                fix: "give both (the client certificate and its key) or neither",
            })
        }
    }
    opts = opts.with_tls(tls);
    Ok(opts)
}

/// Turns a gRPC/transport failure into one line naming the endpoint, the cause and the fix.
fn explain(endpoint: &str, tls: bool, err: &etcd_client::Error) -> SourceError {
    let chain = super::error_chain(err);
    let lower = chain.to_lowercase();
    // etcd drops the TLS connection of a client without an accepted certificate, which
    // reaches us only as a transport error.
    let tls_dropped = tls
        && (lower.contains("broken pipe")
            || lower.contains("connection reset")
            || lower.contains("connection closed")
            || lower.contains("canceled")
            || lower.contains("transport"));
    let unreachable = lower.contains("refused")
        || lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("dns")
        || lower.contains("unreachable");
    let fix = if unreachable {
        "check that etcd is running and that --etcd-endpoint names its client URL"
    } else if tls_dropped
        || lower.contains("certificate")
        || lower.contains("handshake")
        || lower.contains("tls")
        || lower.contains("unknownissuer")
        || lower.contains("bad certificate")
    {
        "check --etcd-cacert (the CA that signed etcd's server certificate) and --etcd-cert/--etcd-key (a client certificate etcd trusts, e.g. healthcheck-client)"
    } else if !tls && endpoint.starts_with("https") {
        "an https endpoint needs --etcd-cacert (and usually --etcd-cert/--etcd-key)"
    } else if lower.contains("permission denied") || lower.contains("authentication") {
        "use a client certificate with access to the Maintenance API"
    } else {
        "check --etcd-endpoint and the etcd certificates"
    };
    SourceError::Etcd {
        endpoint: endpoint.to_string(),
        message: chain,
        fix,
    }
}

/// Connects to the first endpoint that answers a status call, then opens a snapshot stream
/// on that same member, so the recorded member, revision and version describe the bytes that
/// are actually stored.
///
/// # Errors
/// [`SourceError::Etcd`] naming the endpoint and the fix: unreadable certificates,
/// connection refused, TLS failures, or a stream that ends before its first chunk.
pub async fn snapshot(ep: &EtcdEndpoint) -> Result<SourceEntry, SourceError> {
    if ep.endpoints.is_empty() {
        return Err(SourceError::Etcd {
            endpoint: String::new(),
            message: "no endpoint".into(),
            fix: "give --etcd-endpoint URL",
        });
    }
    let tls = ep.cacert.is_some() || ep.cert.is_some();
    let opts = options(ep)?;
    let mut last = None;
    for endpoint in &ep.endpoints {
        match open(endpoint, opts.clone(), tls).await {
            Ok(entry) => return Ok(entry),
            Err(e) => {
                tracing::warn!("{e}");
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one endpoint was tried"))
}

async fn open(endpoint: &str, opts: ConnectOptions, tls: bool) -> Result<SourceEntry, SourceError> {
    let fail = |e: etcd_client::Error| explain(endpoint, tls, &e);
    let connect = Client::connect([endpoint], Some(opts));
    let mut client = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| SourceError::Etcd {
            endpoint: endpoint.to_string(),
            message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            fix: "check that etcd is running and that --etcd-endpoint names its client URL",
        })?
        .map_err(fail)?;
    let status = tokio::time::timeout(CONNECT_TIMEOUT, client.status())
        .await
        .map_err(|_| SourceError::Etcd {
            endpoint: endpoint.to_string(),
            message: format!(
                "status call got no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
            fix: "check that etcd is running and that --etcd-endpoint names its client URL",
        })?
        .map_err(fail)?;
    let header = status.header();
    // The live keys at the status revision, counted at exactly that revision so that writes
    // racing the snapshot do not matter; `drill` counts the same revision in the restore.
    let keys = match header.map(|h| h.revision()) {
        Some(rev) => client
            .get(
                "",
                Some(
                    etcd_client::GetOptions::new()
                        .with_all_keys()
                        .with_count_only()
                        .with_revision(rev),
                ),
            )
            .await
            .ok()
            .and_then(|r| u64::try_from(r.count()).ok()),
        None => None,
    };
    let info = EtcdInfo {
        keys,
        revision: header.map(|h| h.revision()),
        cluster_id: header.map(|h| format!("{:x}", h.cluster_id())),
        member_id: header.map(|h| format!("{:x}", h.member_id())),
        version: Some(status.version().to_string()).filter(|v| !v.is_empty()),
        ..EtcdInfo::default()
    };
    tracing::info!(
        "etcd {endpoint}: version {}, db {} bytes, revision {:?}",
        status.version(),
        status.db_size(),
        info.revision
    );
    let mut stream = client.snapshot().await.map_err(fail)?;
    let first = stream
        .message()
        .await
        .map_err(fail)?
        .ok_or_else(|| SourceError::Etcd {
            endpoint: endpoint.to_string(),
            message: "the snapshot stream ended before its first chunk".into(),
            fix: "check the etcd server's log; try again",
        })?;
    // Every chunk carries the bytes still to come of the database; the 32-byte sha256 of
    // the database follows as a last message of its own.
    let size = first.blob().len() as u64 + first.remaining_bytes() + 32;
    let first_chunk = Bytes::copy_from_slice(first.blob());
    let endpoint_owned = endpoint.to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
    tokio::spawn(async move {
        // The client must outlive the stream.
        let _client = client;
        if tx.send(Ok(first_chunk)).await.is_err() {
            return;
        }
        loop {
            let item = match stream.message().await {
                Ok(Some(m)) => Ok(Bytes::copy_from_slice(m.blob())),
                Ok(None) => break,
                Err(e) => Err(io::Error::other(format!(
                    "etcd {endpoint_owned}: snapshot stream broke: {e}"
                ))),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let stream = tokio_stream_from(rx);
    let reader = tokio_util::io::StreamReader::new(stream);
    let handle = tokio::runtime::Handle::current();
    Ok(SourceEntry {
        path: "etcd/snapshot.db".into(),
        kind: EntryKind::EtcdSnapshot,
        size,
        mode: 0o600,
        mtime: chrono::Utc::now().timestamp(),
        open: Box::new(move || Ok(bridge(reader, handle))),
        etcd: Some(info),
    })
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
