//! A TCP proxy in front of a test server, for store failures that happen on the wire: it can
//! be stopped (every open connection cut, new ones refused) to play a store that dies in the
//! middle of an upload, and it can cut chosen connections right after accepting them to play
//! transient network errors that the client's retries must absorb. Test support only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A proxy on 127.0.0.1, forwarding to `upstream`; stopped on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Forwards to `upstream` (`host:port`). Connections whose 0-based accept number is in
    /// `cut` are closed at once, before any byte is forwarded.
    pub fn start(upstream: &str, cut: &[usize]) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let (upstream, cut) = (upstream.to_string(), cut.to_vec());
        let (acc, stop) = (accepted.clone(), stopped.clone());
        runtime.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = acc.fetch_add(1, Ordering::SeqCst);
                if stop.load(Ordering::SeqCst) || cut.contains(&n) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            accepted,
            stopped,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every connection and refuses new ones: the store is gone.
    pub fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}
