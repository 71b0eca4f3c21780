//! Errors that choose the process's exit code. Everything else is exit 1; these are
//! distinguished so scripts can tell bad input (2) from a backup that failed its checks (3)
//! and from a health check that failed (4).

/// Bad input: the command line or config asks for something impossible (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Standard output was closed by the reader (e.g. `cpvault list | head`): not an error (exit 0).
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct StdoutClosed;

/// A backup failed verification (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerifyFailed(pub String);

/// A health check failed: `status` found a cluster whose newest backup is missing, older
/// than its maximum age, or failed its last drill (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HealthCheckFailed(pub String);
