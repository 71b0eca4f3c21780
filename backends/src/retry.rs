//! Retrying the requests object_store does not retry itself, when a connection broke off.

/// Whether `e` is a connection that broke off (worth retrying), not a server's answer.
fn is_transient(e: &object_store::Error) -> bool {
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let text = e.to_string();
    [
        "error sending request",
        "connection reset",
        "Connection reset",
        "connection closed",
        "broken pipe",
    ]
    .iter()
    .any(|t| text.contains(t))
}

/// Runs `op` until it succeeds, fails with a server's answer, or has broken off four times
/// (with a growing pause between tries); returns its last result and the number of tries.
/// For the requests object_store does not retry itself (conditional PUTs, the probe).
pub(crate) async fn retry_broken_off<T, F, Fut>(
    what: &str,
    mut op: F,
) -> (Result<T, object_store::Error>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match op().await {
            Err(e) if attempt < 4 && is_transient(&e) => {
                tracing::warn!("{what} broke off, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                    .await;
            }
            r => return (r, attempt),
        }
    }
}
