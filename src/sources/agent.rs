//! A private ssh-agent that holds a node key for the length of one SSH login, so that a key
//! cpvault reads from the cluster (secret `kube-system/sshkeys`) reaches `ssh` without ever
//! being written to a file: the key goes to `ssh-add` over a pipe, the agent listens on a
//! socket in a fresh 0700 directory, and both go away as soon as the login is done (the SSH
//! master connection is authenticated once; every later command rides on it). Even if
//! cpvault is killed with SIGKILL during that login, nothing holding the key is left on
//! disk, and the agent drops the key by itself after [`KEY_LIFETIME_SECS`].
//!
//! This module must never write the key anywhere, log it, or hand the agent to anything but
//! the one login it was started for.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

/// How long the agent keeps the key even if cpvault never gets to stop it (killed with
/// SIGKILL mid-login): long enough for a slow login (connect timeout 15 s), short enough
/// that a leftover agent holds nothing for long.
pub const KEY_LIFETIME_SECS: u32 = 120;

/// A private key held in memory only; its bytes are wiped on drop and never printed.
#[derive(Clone)]
pub struct SecretKey(std::sync::Arc<Zeroizing<Vec<u8>>>);

impl SecretKey {
    /// Wraps `bytes` (a PEM or OpenSSH private key).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> SecretKey {
        SecretKey(std::sync::Arc::new(bytes))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Why the private agent could not take the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// `ssh-agent` or `ssh-add` is not installed or could not start.
    #[error("cannot start {tool}: {cause}")]
    Start {
        /// The program.
        tool: &'static str,
        /// Why.
        cause: String,
    },
    /// The agent did not open its socket in time.
    #[error("ssh-agent did not open its socket within 10s")]
    NoSocket,
    /// `ssh-add` refused the key.
    #[error("the node key from the cluster is not a usable private key: ssh-add said {said:?}")]
    BadKey {
        /// ssh-add's own words.
        said: String,
    },
}

impl AgentError {
    /// How to get past it.
    pub fn fix(&self) -> &'static str {
        match self {
            AgentError::Start { .. } => {
                "install openssh-client on this machine, or pass --ssh-key FILE"
            }
            AgentError::NoSocket => "pass --ssh-key FILE to use a key file instead",
            AgentError::BadKey { .. } => {
                "the secret must hold an unencrypted OpenSSH or PEM private key; or pass --ssh-key FILE"
            }
        }
    }
}

/// A running private agent holding one key; stopped (and its socket dir removed) on drop.
pub struct PrivateAgent {
    socket: PathBuf,
    // Declared before `dir`: the agent is killed before its directory goes.
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl PrivateAgent {
    /// Starts `ssh-agent` on a socket in a new 0700 directory and loads `key` into it over
    /// `ssh-add`'s stdin.
    ///
    /// # Errors
    /// [`AgentError`]: the tools are missing, the agent does not come up, or `ssh-add`
    /// refuses the key (its message is kept; the key is not in it).
    pub async fn start(key: &SecretKey) -> Result<PrivateAgent, AgentError> {
        // 0700 from creation: only this user can reach the socket.
        let dir = tempfile::Builder::new()
            .prefix("cpvault-agent.")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| AgentError::Start {
                tool: "ssh-agent",
                cause: format!("no private directory for its socket: {e}"),
            })?;
        let socket = dir.path().join("agent.sock");
        let child = tokio::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AgentError::Start {
                tool: "ssh-agent",
                cause: e.to_string(),
            })?;
        let agent = PrivateAgent {
            socket,
            child,
            _dir: dir,
        };
        agent.wait_for_socket().await?;
        agent.add(key).await?;
        Ok(agent)
    }

    /// The socket to give `ssh` as `SSH_AUTH_SOCK`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn wait_for_socket(&self) -> Result<(), AgentError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            if Instant::now() > deadline {
                return Err(AgentError::NoSocket);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn add(&self, key: &SecretKey) -> Result<(), AgentError> {
        let mut add = tokio::process::Command::new("ssh-add")
            .args(["-q", "-t", &KEY_LIFETIME_SECS.to_string(), "-"])
            .env("SSH_AUTH_SOCK", &self.socket)
            // ssh-add would ask for a passphrase on the terminal; an encrypted key is an
            // error here, not a prompt.
            .env_remove("DISPLAY")
            .env_remove("SSH_ASKPASS")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| AgentError::Start {
                tool: "ssh-add",
                cause: e.to_string(),
            })?;
        let mut stdin = add.stdin.take().expect("piped");
        let bytes = &key.0;
        // A write error means ssh-add stopped early; its exit status says why.
        let _ = stdin.write_all(bytes).await;
        if !bytes.ends_with(b"\n") {
            let _ = stdin.write_all(b"\n").await;
        }
        drop(stdin);
        let out = add
            .wait_with_output()
            .await
            .map_err(|e| AgentError::Start {
                tool: "ssh-add",
                cause: e.to_string(),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(AgentError::BadKey {
                said: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

impl Drop for PrivateAgent {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    //! Needs openssh-client (ssh-agent, ssh-add, ssh-keygen), which every SSH source needs too.
    use super::*;

    #[tokio::test]
    async fn a_key_that_is_not_a_key_is_refused_without_echoing_it() {
        let secret = b"not-a-key-but-a-secret-value".to_vec();
        let err = PrivateAgent::start(&SecretKey::new(Zeroizing::new(secret)))
            .await
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(text.contains("not a usable private key"), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
    }

    #[tokio::test]
    async fn the_socket_dir_is_private_and_gone_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let bytes = Zeroizing::new(std::fs::read(&key).unwrap());
        let agent = PrivateAgent::start(&SecretKey::new(bytes)).await.unwrap();
        let socket_dir = agent.socket().parent().unwrap().to_path_buf();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&socket_dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        let listed = std::process::Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", agent.socket())
            .output()
            .unwrap();
        assert!(listed.status.success(), "the agent holds no key");
        drop(agent);
        assert!(!socket_dir.exists());
    }
}
