//! Sources: where backup entries come from. Each produces [`SourceEntry`] values with a
//! known size and a byte stream opened lazily by the writer; a source must never write
//! plaintext to local disk or change anything where it reads (no chmod, no copies).
//! Remote sources (etcd gRPC, SSH, Kubernetes exec) stream asynchronously; [`bridge`] hands
//! such a stream to the writer's producer thread.

pub mod agent;
pub mod etcd_dial;
pub mod etcd_grpc;
pub mod etcd_portforward;
pub mod etcd_tunnel;
pub mod etcdctl;
pub mod gather;
pub mod kit;
pub mod kube;
pub mod local;
pub mod settings;
pub mod ssh;

use std::io;
use std::path::PathBuf;

pub use crate::archive::writer::SourceEntry;

/// A source that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A file could not be opened or stat'ed.
    #[error("{what} '{path}': {source}{hint}")]
    Open {
        /// What it was meant to be.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
        /// A fix, when the cause suggests one.
        hint: &'static str,
    },
    /// The path is not what the flag needs.
    #[error("{what} '{path}': {reason}")]
    Invalid {
        /// What it was meant to be.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// etcd could not be reached or refused the snapshot.
    #[error("etcd {endpoint}: {message} ({fix})")]
    Etcd {
        /// The endpoint URL, or empty when no endpoint was involved yet.
        endpoint: String,
        /// What went wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// An SSH connection or a remote command failed.
    #[error("SSH {destination}: {message} ({fix})")]
    Ssh {
        /// `user@host[:port]`.
        destination: String,
        /// What went wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// Where the snapshot was to be taken lacks a tool it needs (no `sh` in a distroless
    /// etcd image, no etcdctl on the node); the SSH tunnel may still work.
    #[error("{place} has no {tool} ({detail}) ({fix})")]
    Missing {
        /// The pod or node.
        place: String,
        /// What is missing.
        tool: &'static str,
        /// What was said.
        detail: String,
        /// How to fix it.
        fix: String,
    },
    /// The Kubernetes API refused or lacked what a profile needs.
    #[error("Kubernetes: {message} ({fix})")]
    Kube {
        /// What went wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
}

/// `err` and its sources as one line, each cause once (transport errors often repeat their
/// source in their own text).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        src = s.source();
    }
    text.trim().replace('\n', " ")
}

/// Wraps an async byte stream as a blocking reader for the writer's producer thread (which
/// is not a runtime thread, so blocking there is allowed).
pub fn bridge<R>(reader: R, handle: tokio::runtime::Handle) -> Box<dyn io::Read + Send>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
        reader, handle,
    ))
}

/// The entry of a snapshot that a remote command streams back (etcdctl's saved file, read
/// with `cat` over SSH or exec), sized by what the remote side reported, with the facts
/// etcdctl told there.
pub fn remote_snapshot_entry<R>(
    size: u64,
    reader: R,
    facts: crate::archive::manifest::EtcdInfo,
) -> SourceEntry
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    let handle = tokio::runtime::Handle::current();
    SourceEntry {
        path: "etcd/snapshot.db".into(),
        kind: crate::archive::manifest::EntryKind::EtcdSnapshot,
        size,
        mode: 0o600,
        mtime: chrono::Utc::now().timestamp(),
        open: Box::new(move || Ok(bridge(reader, handle))),
        etcd: Some(facts),
        etcd_later: None,
    }
}

/// Work to do after the backup, whatever its outcome (e.g. removing a remote temp dir).
pub type Cleanup = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An async reader that keeps something else alive as long as it is read (the remote
/// process whose stdout it is, the connection it runs on).
pub struct KeepAlive<R> {
    inner: R,
    _guard: Box<dyn std::any::Any + Send>,
}

impl<R> KeepAlive<R> {
    /// Wraps `inner`, holding `guard` until the reader is dropped.
    pub fn new(inner: R, guard: Box<dyn std::any::Any + Send>) -> Self {
        KeepAlive {
            inner,
            _guard: guard,
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for KeepAlive<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
