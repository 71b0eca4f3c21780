//! SSH source: the control-plane node's PKI (`tar -cf - .` of the PKI dir, modes kept) and an
//! etcd snapshot taken there with etcdctl, both streamed over one multiplexed OpenSSH
//! connection (the `openssh` crate drives the system `ssh`, so the user's agent, config and
//! known_hosts apply). Host keys are always checked: unknown keys are refused unless the
//! user asks to accept new ones, and a changed key is always refused. Nothing on the node is
//! changed except a private temp dir for the snapshot, which is removed afterwards; remote
//! commands run under `sudo -n` unless the SSH user is root. No secret touches local disk:
//! the PKI is held in memory (it is a few KiB) and the snapshot streams.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};

use super::etcdctl::{self, Saved};
use super::{Cleanup, SourceError};
use crate::archive::writer::SourceEntry;
use crate::etcdctl::RemoteEtcdctl;

mod config;
mod files;
pub use files::{NodeFile, TarFailure};

/// Whether remote commands run under sudo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SudoMode {
    /// sudo unless the SSH user is root.
    #[default]
    Auto,
    /// Always sudo.
    Always,
    /// Never sudo.
    Never,
}

/// How to reach the node.
#[derive(Debug, Clone, Default)]
pub struct SshTarget {
    /// Login user (`None`: ssh's default).
    pub user: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port (`None`: ssh's default).
    pub port: Option<u16>,
    /// Private key file.
    pub key: Option<PathBuf>,
    /// A private key held in memory (read from the cluster), offered through a private
    /// ssh-agent for the login only; it is never written to a file.
    pub key_in_memory: Option<super::agent::SecretKey>,
    /// `USER@HOST[:PORT]` of a jump host.
    pub jump: Option<String>,
    /// known_hosts file to use instead of the user's.
    pub known_hosts: Option<PathBuf>,
    /// Trust a host key seen for the first time (StrictHostKeyChecking=accept-new).
    pub accept_new: bool,
    /// sudo policy.
    pub sudo: SudoMode,
}

impl SshTarget {
    /// Splits `USER@HOST` (the user is optional).
    pub fn from_destination(dest: &str) -> SshTarget {
        let (user, host) = match dest.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h.to_string()),
            None => (None, dest.to_string()),
        };
        SshTarget {
            user,
            host,
            ..SshTarget::default()
        }
    }

    /// `user@host[:port]` for messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    fn known_hosts_name(&self) -> String {
        match self.port {
            Some(p) if p != 22 => format!("[{}]:{p}", self.host),
            _ => self.host.clone(),
        }
    }
}

/// One SSH connection to a node, shared by the commands that run there.
pub struct Node {
    session: Arc<Session>,
    target: SshTarget,
    sudo: bool,
}

fn connect_error(t: &SshTarget, err: &openssh::Error) -> SourceError {
    let text = super::error_chain(err);
    let kh_file = t
        .known_hosts
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    let (message, fix) = if text.contains("IDENTIFICATION HAS CHANGED")
        || text.contains("Host key for") && text.contains("has changed")
    {
        (
            format!("the host key of {} has CHANGED since it was recorded in {kh_file} — this may be a man-in-the-middle attack", t.known_hosts_name()),
            format!("if the node was rebuilt, verify its new key out of band, then remove the old one with `ssh-keygen -R '{}'`", t.known_hosts_name()),
        )
    } else if text.contains("Host key verification failed") || text.contains("host key is known") {
        (
            format!("the host key of {} is not in {kh_file}, so the node cannot be authenticated", t.known_hosts_name()),
            format!(
                "check the key's fingerprint and add it (`ssh-keyscan{} {} >> {kh_file}`), or pass --ssh-accept-new to trust it on first connection",
                t.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
                t.host
            ),
        )
    } else if text.contains("Permission denied") || text.contains("Too many authentication") {
        (
            format!("authentication failed ({text})"),
            format!(
                "check --ssh-key (a private key whose public half is in {}'s authorized_keys) and the user name",
                t.user.as_deref().unwrap_or("the user")
            ),
        )
    } else if text.contains("Connection refused")
        || text.contains("timed out")
        || text.contains("Could not resolve")
        || text.contains("unreachable")
        || text.contains("No route")
    {
        (
            format!("cannot connect ({text})"),
            "check the host address, --ssh-port, and that sshd runs on the node".into(),
        )
    } else {
        (
            text,
            "run `ssh -v` with the same settings to see why".into(),
        )
    };
    SourceError::Ssh {
        destination: t.display(),
        message,
        fix,
    }
}

impl Node {
    /// Opens the connection and finds out whether commands need sudo.
    ///
    /// # Errors
    /// [`SourceError::Ssh`] naming the host and the fix: unknown or changed host key,
    /// authentication failure, unreachable host, or a non-root user without passwordless sudo.
    pub async fn connect(t: &SshTarget) -> Result<Node, SourceError> {
        let mut b = SessionBuilder::default();
        // Never StrictHostKeyChecking=no: accept-new still refuses a changed key.
        b.known_hosts_check(if t.accept_new {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(Duration::from_secs(15))
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(std::env::temp_dir())
        // If cpvault dies without closing it, the master must not stay around as an open
        // door to the node for other local processes of this user.
        .control_persist(openssh::ControlPersist::IdleFor(
            std::num::NonZeroUsize::new(30).expect("non-zero"),
        ));
        if let Some(u) = &t.user {
            b.user(u.clone());
        }
        if let Some(p) = t.port {
            b.port(p);
        }
        if let Some(k) = &t.key {
            b.keyfile(k);
        }
        if let Some(kh) = &t.known_hosts {
            b.user_known_hosts_file(kh);
        }
        if let Some(j) = &t.jump {
            b.jump_hosts([j]);
        }
        // The user's and the system's ssh configuration, then cpvault's cipher preference,
        // where ssh resolves the node the same with it (`config`); only the master
        // connection reads it.
        let config = match &t.jump {
            None => config::for_connection(&t.host, t.user.as_deref(), t.port).await,
            Some(_) => None,
        };
        if let Some(c) = &config {
            b.config_file(c.path());
        }
        // The agent only lives through the login: the master connection is authenticated
        // once and every later command rides on it.
        let agent = match &t.key_in_memory {
            Some(key) => Some(super::agent::PrivateAgent::start(key).await.map_err(|e| {
                SourceError::Ssh {
                    destination: t.display(),
                    message: e.to_string(),
                    fix: e.fix().into(),
                }
            })?),
            None => None,
        };
        if let Some(a) = &agent {
            b.ssh_auth_sock(a.socket());
        }
        let session = b.connect(&t.host).await.map_err(|e| connect_error(t, &e));
        drop(agent);
        drop(config);
        let session = session?;
        let mut node = Node {
            session: Arc::new(session),
            target: t.clone(),
            sudo: false,
        };
        node.sudo = match t.sudo {
            SudoMode::Never => false,
            SudoMode::Always => true,
            SudoMode::Auto => node.plain("id -u").await?.trim() != "0",
        };
        if node.sudo {
            node.check_sudo().await?;
        }
        Ok(node)
    }

    fn fail(&self, message: String, fix: impl Into<String>) -> SourceError {
        SourceError::Ssh {
            destination: self.target.display(),
            message,
            fix: fix.into(),
        }
    }

    /// Runs `script` without sudo and returns its stdout.
    async fn plain(&self, script: &str) -> Result<String, SourceError> {
        let out = self
            .session
            .command("sh")
            .args(["-c", script])
            .output()
            .await
            .map_err(|e| self.fail(format!("running `{script}`: {e}"), "check the connection"))?;
        if !out.status.success() {
            return Err(self.fail(
                format!(
                    "`{script}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "check the node",
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn check_sudo(&self) -> Result<(), SourceError> {
        let out = self
            .session
            .command("sh")
            // Not 127: openssh reads that exit code as "command not found" and hides it.
            .args(["-c", "command -v sudo >/dev/null || exit 99; sudo -n true"])
            .output()
            .await
            .map_err(|e| self.fail(format!("checking sudo: {e}"), "check the connection"))?;
        let user = self.target.user.as_deref().unwrap_or("the SSH user");
        match out.status.code() {
            Some(0) => Ok(()),
            Some(99) => Err(self.fail(
                "sudo is not installed on the node, and the SSH user is not root".into(),
                format!("log in as root, install sudo, or pass --ssh-sudo never if {user} can read the files itself"),
            )),
            _ => Err(self.fail(
                format!(
                    "{user} cannot run sudo without a password ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                format!("give {user} passwordless sudo (NOPASSWD) for sh, or log in as root"),
            )),
        }
    }

    /// `sh -c SCRIPT`, under sudo when needed.
    fn command(&self, script: &str) -> openssh::OwningCommand<Arc<Session>> {
        shell(self.session.clone(), self.sudo, script)
    }

    async fn output(&self, what: &str, script: &str) -> Result<std::process::Output, SourceError> {
        let out = self
            .command(script)
            .output()
            .await
            .map_err(|e| self.fail(format!("{what}: {e}"), "check the connection"))?;
        Ok(out)
    }

    /// Runs `script` on the node (under sudo when needed) to the end.
    ///
    /// # Errors
    /// [`SourceError::Ssh`] when the connection fails; a non-zero exit is in the output.
    pub async fn run(&self, script: &str) -> Result<std::process::Output, SourceError> {
        self.output("running a command", script).await
    }

    /// Starts `script` on the node with stdin piped (and stdout/stderr captured).
    ///
    /// # Errors
    /// [`SourceError::Ssh`] when the connection fails.
    pub async fn spawn_with_stdin(
        &self,
        script: &str,
    ) -> Result<openssh::Child<Arc<Session>>, SourceError> {
        self.command(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| self.fail(format!("starting `{script}`: {e}"), "check the connection"))
    }

    /// Runs `script` on the node (under sudo when needed) with `input` on its stdin, to the
    /// end. What must not show in `ps` or sudo's log (hashes, file contents) goes this way
    /// rather than into the script.
    ///
    /// # Errors
    /// [`SourceError::Ssh`] when the connection fails; a non-zero exit is in the output.
    pub async fn run_with_stdin(
        &self,
        script: &str,
        input: &[u8],
    ) -> Result<std::process::Output, SourceError> {
        use tokio::io::AsyncWriteExt;
        let mut child = self.spawn_with_stdin(script).await?;
        let mut stdin = child.stdin().take().expect("piped");
        // A script that exits without reading all of its input is reported by its status.
        let _ = stdin.write_all(input).await;
        let _ = stdin.shutdown().await;
        drop(stdin);
        child
            .wait_with_output()
            .await
            .map_err(|e| self.fail(format!("running a command: {e}"), "check the connection"))
    }

    /// `user@host[:port]`.
    pub fn destination(&self) -> String {
        self.target.display()
    }

    /// Saves a snapshot with etcdctl on the node into a private temp dir and returns the
    /// entry that streams it back, plus the cleanup that removes the temp dir.
    ///
    /// # Errors
    /// [`SourceError::Ssh`] with etcdctl's own message when the snapshot cannot be taken.
    pub async fn etcd_snapshot(
        &self,
        e: &RemoteEtcdctl,
    ) -> Result<(SourceEntry, Cleanup), SourceError> {
        let out = self
            .output("taking an etcd snapshot", &etcdctl::save_script(e))
            .await?;
        if out.status.code() == Some(etcdctl::NO_ETCDCTL) {
            return Err(SourceError::Missing {
                place: format!("node {}", self.target.display()),
                tool: "etcdctl",
                detail: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', "; "),
                fix: "use --etcd-via-ssh (gRPC through the SSH connection), or --node-etcdctl CMD"
                    .into(),
            });
        }
        if !out.status.success() {
            return Err(self.fail(
                format!(
                    "etcdctl snapshot save failed on the node: {}",
                    String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ")
                ),
                "check --node-etcdctl, --node-etcd-endpoint and the --node-etcd-* certificate paths (they are paths on the node)",
            ));
        }
        let said = String::from_utf8_lossy(&out.stdout);
        let saved =
            etcdctl::parse_saved(&said).map_err(|m| self.fail(m, "check --node-etcdctl"))?;
        let facts = etcdctl::parse_facts(&said);
        // From here on every error path removes the temp dir: it holds the whole database.
        let cleanup = self.cleanup(saved.clone());
        if saved.size == 0 {
            cleanup.await;
            return Err(self.fail(
                "etcdctl saved an empty snapshot".into(),
                "check etcd's health on the node",
            ));
        }
        let spawned = self
            .command(&etcdctl::cat_script(&saved))
            .stdout(Stdio::piped())
            .spawn()
            .await;
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                cleanup.await;
                return Err(self.fail(
                    format!("streaming the snapshot: {e}"),
                    "check the connection",
                ));
            }
        };
        let stdout = child.stdout().take().expect("piped");
        let reader = super::KeepAlive::new(stdout, Box::new(child));
        let entry = super::remote_snapshot_entry(saved.size, reader, facts);
        Ok((entry, cleanup))
    }

    fn cleanup(&self, saved: Saved) -> Cleanup {
        let session = self.session.clone();
        let sudo = self.sudo;
        let dest = self.target.display();
        Box::pin(async move {
            let script = etcdctl::cleanup_script(&saved);
            match shell(session, sudo, &script).status().await {
                Ok(s) if s.success() => {}
                other => tracing::warn!(
                    "could not remove the snapshot temp dir {} on {dest} ({other:?}); remove it by hand",
                    saved.dir
                ),
            }
        })
    }

    /// Forwards connections to the local unix socket `local` to `host:port` as seen from
    /// the node, through this connection (`ssh -L local:host:port` on the control master);
    /// the forward ends with the connection.
    ///
    /// # Errors
    /// [`SourceError::Ssh`] when the control master refuses the forward.
    pub async fn forward_unix(
        &self,
        local: &std::path::Path,
        host: &str,
        port: u16,
    ) -> Result<(), SourceError> {
        self.session
            .request_port_forward(
                openssh::ForwardType::Local,
                openssh::Socket::UnixSocket { path: local.into() },
                openssh::Socket::TcpSocket {
                    host: host.into(),
                    port,
                },
            )
            .await
            .map_err(|e| {
                self.fail(
                    format!("cannot forward a local socket to {host}:{port} on the node: {}", super::error_chain(&e)),
                    "check the SSH settings with `ssh -v`; the client must allow forwarding (no ClearAllForwardings)",
                )
            })
    }

    /// Closes the connection (the control master exits).
    pub async fn close(self) {
        if let Ok(session) = Arc::try_unwrap(self.session) {
            let _ = session.close().await;
        }
    }
}

/// `sh -c SCRIPT` on the node, under `sudo -n` when `sudo`, with stdin closed.
fn shell(session: Arc<Session>, sudo: bool, script: &str) -> openssh::OwningCommand<Arc<Session>> {
    let mut c = if sudo {
        let mut c = Session::to_command(session, "sudo");
        c.args(["-n", "sh", "-c", script]);
        c
    } else {
        let mut c = Session::to_command(session, "sh");
        c.args(["-c", script]);
        c
    };
    c.stdin(Stdio::null());
    c
}
