//! Direct etcd source: `Maintenance.Snapshot` over gRPC, plain or with mutual TLS, with the
//! TLS material in memory (read from local files here, or from a node by the SSH tunnel
//! source, which shares [`stream`] so both record the same facts). The
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
use zeroize::Zeroizing;

use super::{bridge, SourceError};
use crate::archive::manifest::{EntryKind, EtcdInfo, EtcdMember};
use crate::archive::writer::SourceEntry;

/// Where and how to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdEndpoint {
    /// Endpoint URLs (`https://host:2379` or `http://…`): one member's, or every member's of
    /// an HA cluster (the snapshot comes from a healthy follower, see [`snapshot`]).
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) that signed the server certificate.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key: Option<PathBuf>,
}

/// How long a connection and the first status call may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags a message points the user at: the direct source's own, or the node's when
/// etcd is reached through SSH.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// The endpoint flag.
    pub endpoint: &'static str,
    /// The CA flag.
    pub cacert: &'static str,
    /// The client certificate flag.
    pub cert: &'static str,
    /// The client key flag.
    pub key: &'static str,
}

/// The direct source's flags.
pub const DIRECT: Flags = Flags {
    endpoint: "--etcd-endpoint",
    cacert: "--etcd-cacert",
    cert: "--etcd-cert",
    key: "--etcd-key",
};

/// TLS material in memory: wherever it came from (local files, or files read on a node),
/// it is never written anywhere, and the key is wiped when this is dropped.
#[derive(Default)]
pub struct TlsPem {
    /// CA certificate (PEM) that signed the server certificate.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// The name the server certificate must be valid for, when it differs from the host
    /// that is dialled (a tunnel's local end).
    pub server_name: Option<String>,
}

impl TlsPem {
    /// Whether any TLS setting is given.
    pub fn wanted(&self) -> bool {
        self.ca.is_some() || self.identity.is_some() || self.server_name.is_some()
    }

    /// The client's TLS options.
    pub fn options(&self) -> TlsOptions {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, &**key));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        tls
    }
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsPem")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|e| SourceError::Etcd {
        endpoint: String::new(),
        message: format!("cannot read {flag} '{}': {e}", path.display()),
        fix: "check the path and that cpvault may read it".into(),
    })
}

pub(super) fn local_tls(ep: &EtcdEndpoint) -> Result<TlsPem, SourceError> {
    let mut tls = TlsPem::default();
    if let Some(ca) = &ep.cacert {
        tls.ca = Some(read_pem("--etcd-cacert", ca)?);
    }
    match (&ep.cert, &ep.key) {
        (Some(c), Some(k)) => {
            // The key is a secret: it lives only in memory, and only as long as the client.
            let key = Zeroizing::new(read_pem("--etcd-key", k)?);
            tls.identity = Some((read_pem("--etcd-cert", c)?, key));
        }
        (None, None) => {}
        _ => {
            return Err(SourceError::Etcd {
                endpoint: String::new(),
                message: "--etcd-cert and --etcd-key go together".into(),
                fix: "give both (the client certificate and its key) or neither".into(),
            })
        }
    }
    Ok(tls)
}

/// The connection options every etcd client here uses.
pub(super) fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(20))
}

/// The fix for an unreachable etcd.
fn unreachable_fix(flags: &Flags) -> String {
    format!(
        "check that etcd is running and that {} names its client URL",
        flags.endpoint
    )
}

/// Turns a gRPC/transport failure into one line naming the endpoint, the cause and the fix.
pub(super) fn explain(
    endpoint: &str,
    tls: bool,
    flags: &Flags,
    err: &etcd_client::Error,
) -> SourceError {
    let mut chain = super::error_chain(err);
    // tonic's connect errors do not chain their TLS cause; it is only in the Debug form.
    if let Some(cause) = tls_cause(&format!("{err:?}")) {
        chain = format!("{chain}: {cause}");
    }
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
    let Flags {
        endpoint: ep_flag,
        cacert,
        cert,
        key,
    } = flags;
    let fix = if unreachable {
        unreachable_fix(flags)
    } else if lower.contains("notvalidforname") || lower.contains("not valid for") {
        format!("the server certificate is not issued for the name checked; give {ep_flag} with a host name or address the certificate lists")
    } else if lower.contains("unknownissuer") {
        format!("{cacert} is not the CA that issued etcd's server certificate; give that CA (kubeadm: pki/etcd/ca.crt)")
    } else if lower.contains("badcertificate")
        || lower.contains("bad certificate")
        || lower.contains("certificaterequired")
        || lower.contains("certificate required")
    {
        format!("etcd did not accept the client certificate: give {cert}/{key}, a pair issued by the CA etcd trusts for clients (e.g. healthcheck-client)")
    } else if tls_dropped
        || lower.contains("certificate")
        || lower.contains("handshake")
        || lower.contains("tls")
        || lower.contains("unknownissuer")
        || lower.contains("bad certificate")
    {
        format!("check {cacert} (the CA that signed etcd's server certificate) and {cert}/{key} (a client certificate etcd trusts, e.g. healthcheck-client)")
    } else if !tls && endpoint.starts_with("https") {
        format!("an https endpoint needs {cacert} (and usually {cert}/{key})")
    } else if lower.contains("permission denied") || lower.contains("authentication") {
        "use a client certificate with access to the Maintenance API".into()
    } else {
        format!("check {ep_flag} and the etcd certificates")
    };
    SourceError::Etcd {
        endpoint: endpoint.to_string(),
        message: chain,
        fix,
    }
}

/// The TLS failure inside an error's Debug form (`InvalidCertificate(UnknownIssuer)`,
/// `AlertReceived(BadCertificate)`, …), up to its balanced closing parenthesis.
fn tls_cause(debug: &str) -> Option<String> {
    let start = [
        "InvalidCertificate(",
        "AlertReceived(",
        "PeerIncompatible(",
        "PeerMisbehaved(",
    ]
    .iter()
    .filter_map(|m| debug.find(m))
    .min()?;
    let mut depth = 0usize;
    for (i, c) in debug[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(debug[start..=start + i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// A member that answered its status call, as a candidate to take the snapshot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The member's id (the status header's).
    pub member_id: u64,
    /// The leader's id as this member knows it; 0 when it knows none (no quorum).
    pub leader: u64,
    /// Whether the member reported errors (an alarm such as NOSPACE).
    pub errors: bool,
}

impl Answered {
    fn healthy(&self) -> bool {
        self.leader != 0 && !self.errors
    }

    /// Whether this member is the one it names as leader.
    pub(crate) fn is_leader(&self) -> bool {
        self.member_id == self.leader
    }
}

/// Which of the members that answered to take the snapshot from: a healthy follower first
/// (a snapshot streams the whole database, load better kept off the leader), else the
/// healthy leader; `None` when no member is healthy (none knows a leader, or all report
/// errors).
pub fn choose(answered: &[Answered]) -> Option<usize> {
    let healthy = || answered.iter().enumerate().filter(|(_, a)| a.healthy());
    healthy()
        .find(|(_, a)| !a.is_leader())
        .or_else(|| healthy().next())
        .map(|(i, _)| i)
}

/// Connects to each endpoint and asks its status; members that do not answer are skipped
/// with a warning. The snapshot is then taken from a healthy member, a follower when there is
/// one ([`choose`]), on that same connection, so the recorded member, revision and version
/// describe the bytes that are actually stored. `report` says which member on stderr when
/// several endpoints were given.
///
/// # Errors
/// [`SourceError::Etcd`] naming the endpoint and the fix: unreadable certificates,
/// connection refused, TLS failures, or a stream that ends before its first chunk; with
/// several endpoints, when none answered healthy (naming each with its cause).
pub async fn snapshot(ep: &EtcdEndpoint, report: bool) -> Result<SourceEntry, SourceError> {
    if ep.endpoints.is_empty() {
        return Err(SourceError::Etcd {
            endpoint: String::new(),
            message: "no endpoint".into(),
            fix: "give --etcd-endpoint URL".into(),
        });
    }
    let pem = local_tls(ep)?;
    let tls = pem.wanted();
    let mut opts = connect_options();
    if tls {
        opts = opts.with_tls(pem.options());
    }
    let several = ep.endpoints.len() > 1;
    let mut reached = vec![];
    let mut failed: Vec<SourceError> = vec![];
    for endpoint in &ep.endpoints {
        match ask_status(endpoint, &opts, tls).await {
            Ok((client, answered)) => {
                if several && !answered.healthy() {
                    let why = if answered.errors {
                        "it reports errors"
                    } else {
                        "it knows no leader (no quorum)"
                    };
                    tracing::warn!("etcd {endpoint}: skipped: {why}");
                }
                reached.push((endpoint, client, answered));
            }
            Err(e) => {
                if several {
                    crate::say!("warning: skipping an etcd member: {e}");
                }
                failed.push(e);
            }
        }
    }
    let statuses: Vec<Answered> = reached.iter().map(|(_, _, a)| *a).collect();
    let Some(i) = choose(&statuses).or_else(|| (!several && !reached.is_empty()).then_some(0))
    else {
        if !several {
            return Err(failed.pop().expect("the one endpoint failed"));
        }
        let mut said: Vec<String> = failed.iter().map(|e| e.to_string()).collect();
        said.extend(
            reached
                .iter()
                .map(|(e, _, _)| format!("etcd {e}: no leader known, or it reports errors")),
        );
        return Err(SourceError::Etcd {
            endpoint: ep.endpoints.join(","),
            message: format!("no member answered healthy: {}", said.join("; ")),
            fix: unreachable_fix(&DIRECT),
        });
    };
    let (endpoint, client, answered) = reached.swap_remove(i);
    let fail = |e: etcd_client::Error| explain(endpoint, tls, &DIRECT, &e);
    let entry = stream(client, endpoint, &DIRECT, fail, Box::new(())).await?;
    if several && report {
        let name = entry
            .etcd
            .as_ref()
            .and_then(|e| e.from_member.clone())
            .unwrap_or_else(|| format!("{:x}", answered.member_id));
        let role = if answered.is_leader() {
            "the leader: no follower answered healthy"
        } else {
            "follower"
        };
        crate::say!("snapshot from member {name} at {endpoint} ({role})");
    }
    Ok(entry)
}

/// Connects to `endpoint` and asks its status, within [`CONNECT_TIMEOUT`].
async fn ask_status(
    endpoint: &str,
    opts: &ConnectOptions,
    tls: bool,
) -> Result<(Client, Answered), SourceError> {
    let fail = |e: etcd_client::Error| explain(endpoint, tls, &DIRECT, &e);
    let timed_out = || SourceError::Etcd {
        endpoint: endpoint.to_string(),
        message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        fix: unreachable_fix(&DIRECT),
    };
    let connect = Client::connect([endpoint], Some(opts.clone()));
    let mut client = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| timed_out())?
        .map_err(fail)?;
    let status = tokio::time::timeout(CONNECT_TIMEOUT, client.status())
        .await
        .map_err(|_| timed_out())?
        .map_err(fail)?;
    let answered = Answered {
        member_id: status.header().map(|h| h.member_id()).unwrap_or(0),
        leader: status.leader(),
        errors: !status.errors().is_empty(),
    };
    Ok((client, answered))
}

/// Records etcd's facts (revision, member and cluster ids, version, key count) from a
/// status call on `client`, then opens the snapshot stream on that same member and returns
/// the entry reading it. `guard` is kept alive as long as the stream (e.g. the tunnel the
/// client talks through); `fail` explains a gRPC error for the caller's settings.
///
/// # Errors
/// `fail`'s explanation of a failed call, a timeout, or a stream that ends before its first
/// chunk.
pub(super) async fn stream(
    mut client: Client,
    endpoint: &str,
    flags: &Flags,
    fail: impl Fn(etcd_client::Error) -> SourceError,
    guard: Box<dyn std::any::Any + Send>,
) -> Result<SourceEntry, SourceError> {
    let status = tokio::time::timeout(CONNECT_TIMEOUT, client.status())
        .await
        .map_err(|_| SourceError::Etcd {
            endpoint: endpoint.to_string(),
            message: format!(
                "status call got no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
            fix: unreachable_fix(flags),
        })?
        .map_err(&fail)?;
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
    let members = match tokio::time::timeout(CONNECT_TIMEOUT, client.member_list()).await {
        Ok(Ok(list)) => Some(
            list.members()
                .iter()
                .map(|m| EtcdMember {
                    name: m.name().to_string(),
                    id: format!("{:x}", m.id()),
                    peer_urls: m.peer_urls().to_vec(),
                    client_urls: m.client_urls().to_vec(),
                })
                .collect::<Vec<_>>(),
        ),
        Ok(Err(e)) => {
            tracing::warn!(
                "etcd {endpoint}: member list failed ({e}); the membership is not recorded"
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "etcd {endpoint}: member list got no answer; the membership is not recorded"
            );
            None
        }
    };
    let member_id = header.map(|h| format!("{:x}", h.member_id()));
    let info = EtcdInfo {
        keys,
        revision: header.map(|h| h.revision()),
        cluster_id: header.map(|h| format!("{:x}", h.cluster_id())),
        from_member: member_name(members.as_deref(), member_id.as_deref()),
        member_id,
        version: Some(status.version().to_string()).filter(|v| !v.is_empty()),
        members,
        ..EtcdInfo::default()
    };
    tracing::info!(
        "etcd {endpoint}: version {}, db {} bytes, revision {:?}",
        status.version(),
        status.db_size(),
        info.revision
    );
    let mut stream = client.snapshot().await.map_err(&fail)?;
    let first = stream
        .message()
        .await
        .map_err(&fail)?
        .ok_or_else(|| SourceError::Etcd {
            endpoint: endpoint.to_string(),
            message: "the snapshot stream ended before its first chunk".into(),
            fix: "check the etcd server's log; try again".into(),
        })?;
    // Every chunk carries the bytes still to come of the database; the 32-byte sha256 of
    // the database follows as a last message of its own.
    let size = first.blob().len() as u64 + first.remaining_bytes() + 32;
    let first_chunk = Bytes::copy_from_slice(first.blob());
    let endpoint_owned = endpoint.to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
    tokio::spawn(async move {
        // The client (and whatever it talks through) must outlive the stream.
        let _client = client;
        let _guard = guard;
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
        etcd_later: None,
    })
}

/// The name of the member with id `id` (hex) in `members`; `None` when either is unknown or
/// the member has no name yet.
pub fn member_name(members: Option<&[EtcdMember]>, id: Option<&str>) -> Option<String> {
    let id = id?;
    members?
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.name.clone())
        .filter(|n| !n.is_empty())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static {
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests;
