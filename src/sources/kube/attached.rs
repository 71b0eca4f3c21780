//! A command exec'd in a pod, run to its end: stdout, stderr and the kubelet's status read
//! together, for the kube source and the user-cluster restore alike.

use tokio::io::AsyncReadExt;

/// What one exec gave back.
pub struct Ran {
    /// Whether the command exited 0.
    pub ok: bool,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr (and the runtime's message), on one line.
    pub said: String,
}

/// Reads the process's stdout and stderr to their end and its exit status.
pub async fn finish(mut p: kube::api::AttachedProcess) -> Ran {
    let status = p.take_status();
    let (mut out, mut err) = (vec![], vec![]);
    let (mut so, mut se) = (p.stdout(), p.stderr());
    let read_out = async {
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
    };
    let read_err = async {
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
    };
    tokio::join!(read_out, read_err);
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let _ = p.join().await;
    let ok = status
        .as_ref()
        .is_some_and(|s| s.status.as_deref() == Some("Success"));
    let err = String::from_utf8_lossy(&err).trim().replace('\n', "; ");
    let msg = status.and_then(|s| s.message).unwrap_or_default();
    let said = match (err.is_empty(), msg.is_empty()) {
        (true, true) => "failed".to_string(),
        (true, false) => msg,
        (false, true) => err,
        (false, false) => format!("{err} ({msg})"),
    };
    Ran {
        ok,
        stdout: out,
        said,
    }
}
