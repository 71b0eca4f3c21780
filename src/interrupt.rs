//! One answer to "has the operator (or the system) asked us to stop?": a process-wide
//! cancellation token that Ctrl-C, SIGTERM and SIGHUP cancel. Long work checks it between
//! steps or races it, and cleans up before returning; nothing here exits the process.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

static TOKEN: OnceLock<CancellationToken> = OnceLock::new();

/// The process's token; the first call (inside the tokio runtime) starts listening for
/// SIGINT, SIGTERM and SIGHUP.
pub fn token() -> CancellationToken {
    TOKEN
        .get_or_init(|| {
            use tokio::signal::unix::{signal, SignalKind};
            let token = CancellationToken::new();
            // Registered here, before the caller starts its work, so that no signal in
            // between takes the default action (dying with plaintext left behind).
            let mut streams: Vec<_> = [
                SignalKind::interrupt(),
                SignalKind::terminate(),
                SignalKind::hangup(),
            ]
            .into_iter()
            .filter_map(|k| signal(k).ok())
            .collect();
            let t = token.clone();
            tokio::spawn(async move {
                if streams.is_empty() {
                    return;
                }
                futures::future::select_all(streams.iter_mut().map(|s| Box::pin(s.recv()))).await;
                t.cancel();
            });
            token
        })
        .clone()
}
