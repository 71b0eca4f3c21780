//! Dialling etcd over a byte stream cpvault opened itself — a forwarded SSH socket, a
//! Kubernetes port-forward — instead of a TCP connection tonic would open: the gRPC channel
//! (mutual TLS checked for the name etcd's certificate is issued for, whatever carries the
//! bytes) and the etcd client on it. It also notes whether the far end ever sent a byte, the
//! only sign that a forward which accepted the connection reached nothing behind it. This
//! module never decides where to connect and never falls back to an unchecked connection;
//! the callers explain failures for their own settings.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_client::{Channel, Client};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Endpoint, Uri};

use super::etcd_grpc::{self, TlsPem, CONNECT_TIMEOUT};

/// Whether the far end of any stream dialled with it has sent a byte.
#[derive(Debug, Clone, Default)]
pub struct Answered(Arc<AtomicBool>);

impl Answered {
    /// Whether a byte ever came back.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Reads a failure behind a relay (an SSH tunnel, a port-forward) that the direct source has
/// already explained as `explained`: a far end that never sent a byte was not reached (the
/// relay accepts the local connection, then closes it when it cannot connect), which no TLS
/// message would show, so it gets `unreached_fix`; a server certificate not issued for the
/// name checked gets `name_fix`; anything else keeps the direct source's reading.
pub fn explain_relayed(
    explained: super::SourceError,
    label: &str,
    via: &str,
    answered: &Answered,
    unreached_fix: impl FnOnce() -> String,
    name_fix: impl FnOnce() -> String,
) -> super::SourceError {
    let super::SourceError::Etcd { message, fix, .. } = explained else {
        return explained;
    };
    if !answered.get() {
        return super::SourceError::Etcd {
            endpoint: label.to_string(),
            message: format!("nothing answered through {via} ({message})"),
            fix: unreached_fix(),
        };
    }
    let lower = message.to_lowercase();
    let fix = if lower.contains("notvalidforname") || lower.contains("not valid for") {
        name_fix()
    } else {
        fix
    };
    super::SourceError::Etcd {
        endpoint: label.to_string(),
        message,
        fix,
    }
}

/// Why [`dial`] failed.
#[derive(Debug)]
pub enum DialError {
    /// The settings could not make a channel (a malformed URL, unusable TLS material);
    /// nothing was dialled.
    Setup(etcd_client::Error),
    /// The connection and its handshakes did not finish within this long.
    Timeout(Duration),
    /// The stream could not be opened, or the TLS or HTTP/2 handshake over it failed.
    Connect(etcd_client::Error),
}

/// How long opening a stream plus the TLS and HTTP/2 handshakes over it may take: a forward
/// is one more hop than a direct connection.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(CONNECT_TIMEOUT.as_secs() * 2);

/// Connects an etcd client to `url` over streams that `open` makes (one per connection the
/// channel needs; the URL's host is never dialled, it is only the name TLS checks unless
/// `pem.server_name` says otherwise). TLS is used when `url` is `https`.
///
/// # Errors
/// [`DialError`]: the settings' fault, a timeout, or a failed connection.
pub async fn dial<C, F, S>(
    url: &str,
    pem: &TlsPem,
    answered: &Answered,
    mut open: C,
) -> Result<Client, DialError>
where
    C: FnMut() -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| DialError::Setup(e.into()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    if url.starts_with("https:") {
        endpoint = endpoint
            .tls_config(pem.options())
            .map_err(|e| DialError::Setup(e.into()))?;
    }
    let seen = answered.0.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let (stream, seen) = (open(), seen.clone());
        async move {
            let inner = stream.await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(Watched {
                inner,
                answered: seen,
            }))
        }
    });
    let channel = tokio::time::timeout(DIAL_TIMEOUT, endpoint.connect_with_connector(connector))
        .await
        .map_err(|_| DialError::Timeout(DIAL_TIMEOUT))?
        .map_err(|e| DialError::Connect(e.into()))?;
    Client::from_channel(Channel::Tonic(channel), Some(etcd_grpc::connect_options()))
        .await
        .map_err(DialError::Connect)
}

/// A dialled stream, noting whether the far end ever sent a byte.
struct Watched<S> {
    inner: S,
    answered: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.answered.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
