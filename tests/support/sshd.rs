//! A real OpenSSH server for tests: `/usr/sbin/sshd` on a free loopback port with its own
//! host key, one authorised ed25519 client key for the current user, and known_hosts files
//! that hold the right host key, no key, or a different one. Test support only; the server
//! and the per-connection processes it forked are killed on drop.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, missing, require, stderr, stdout};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd, killed on drop; owns the temp dir holding its keys, config and log.
pub struct Sshd {
    child: Child,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
    client_key: PathBuf,
    known_hosts: PathBuf,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 and returns once a real login with the client key works.
    pub fn start() -> Sshd {
        Sshd::start_with("")
    }

    /// Like [`Sshd::start`], with extra sshd_config lines (e.g. `SetEnv PATH=…` to make a
    /// node without some tool).
    pub fn start_with(extra_config: &str) -> Sshd {
        // sshd lives in /usr/sbin, which a normal user's PATH lacks, so `require` can't see it.
        if !Path::new(SSHD).is_file() {
            missing(SSHD, "apt-get install openssh-server");
        }
        require("ssh", "openssh-client");
        require("ssh-keygen", "openssh-client");
        // As root, sshd refuses to start without its privilege separation directory (a
        // container has no /run/sshd until the service first runs). Unprivileged sshd does
        // not use it, so a failure here is left for sshd's log to explain.
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::DirBuilder::new().mode(0o755).create("/run/sshd");
        }

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        for key in ["host_ed25519", "client_ed25519", "other_ed25519"] {
            keygen(&d.join(key));
        }
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).unwrap();
        std::fs::write(d.join("known_hosts.empty"), "").unwrap();

        let port = free_port();
        std::fs::write(d.join("sshd_config.extra"), extra_config).unwrap();
        let mut s = Sshd {
            child: launch(&d, port),
            port,
            user: current_user(),
            client_key: d.join("client_ed25519"),
            known_hosts: d.join("known_hosts"),
            dir,
        };
        // free_port() can race with another process taking the port before sshd binds it;
        // that is the one start failure worth retrying.
        for attempt in 1.. {
            match s.wait_ready() {
                Ok(()) => break,
                Err(e) if attempt < 3 && s.log().contains("Address already in use") => {
                    eprintln!("sshd: port {} taken, retrying: {e}", s.port);
                    let _ = s.child.kill();
                    let _ = s.child.wait();
                    s.port = free_port();
                    s.child = launch(s.dir.path(), s.port);
                }
                Err(e) => panic!("sshd did not start: {e}\n--- sshd log ---\n{}", s.log()),
            }
        }
        s
    }

    /// Polls a real login until it succeeds; fails early if sshd exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("sshd exited with {status}"));
            }
            let o = self.ssh("true");
            if o.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no login within 20 s; last ssh: {}", stderr(&o)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user: whoever runs the tests (unprivileged sshd can only log in as itself).
    pub fn user(&self) -> String {
        self.user.clone()
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// `user@127.0.0.1`; the port is separate (`port()`).
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host())
    }

    /// The authorised private ed25519 key (0600, no passphrase).
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// known_hosts with this server's key as `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    /// An existing, empty known_hosts: the server is unknown.
    pub fn empty_known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts.empty")
    }

    /// known_hosts with a different ed25519 key for `[127.0.0.1]:PORT`: the host key changed.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts.wrong")
    }

    /// An `ssh` to this server trusting `known_hosts`, isolated from the caller's ssh setup
    /// (no config, agent or global known_hosts) and never prompting; append the command.
    pub fn ssh_command(&self, known_hosts: &Path) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-p", &self.port.to_string(), "-i"])
            .arg(&self.client_key);
        for opt in [
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "GlobalKnownHostsFile=/dev/null",
            "UpdateHostKeys=no",
            "ConnectTimeout=5",
        ] {
            c.args(["-o", opt]);
        }
        c.arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            // `--` so a command starting with `-` is not read as an ssh option.
            .args(["--", &self.destination()])
            .stdin(Stdio::null());
        c
    }

    /// Runs `command` on this server with the right known_hosts.
    pub fn ssh(&self, command: &str) -> Output {
        self.ssh_command(&self.known_hosts)
            .arg(command)
            .output()
            .unwrap()
    }

    /// sshd's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // sshd leaves established sessions running when the listener dies, so a client's
        // ControlMaster would outlive the test; end the connection processes first.
        let children = children_of(self.child.id());
        if !children.is_empty() {
            // Stderr is dropped: a connection may end by itself before the signal lands.
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(children)
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the config and known_hosts files for `port` and starts sshd, logging to sshd.log.
fn launch(d: &Path, port: u16) -> Child {
    std::fs::write(d.join("sshd_config"), config(d, port)).unwrap();
    for (file, key) in [("known_hosts", "host"), ("known_hosts.wrong", "other")] {
        let public = std::fs::read_to_string(d.join(format!("{key}_ed25519.pub"))).unwrap();
        let fields: Vec<&str> = public.split_whitespace().take(2).collect();
        let line = format!("[127.0.0.1]:{port} {}\n", fields.join(" "));
        std::fs::write(d.join(file), line).unwrap();
    }
    let log = std::fs::File::create(d.join("sshd.log")).unwrap();
    Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sshd")
}

fn config(d: &Path, port: u16) -> String {
    let (host, auth) = (d.join("host_ed25519"), d.join("authorized_keys"));
    // StrictModes no: the files sit under /tmp, which is world-writable. UsePAM no: key
    // login needs no PAM stack, and an unprivileged sshd could not run one. The openssh
    // crate multiplexes many sessions over one connection, hence the raised limits.
    format!(
        "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
         PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPidFile none\n\
         Subsystem sftp internal-sftp\nLogLevel VERBOSE\nMaxSessions 50\nMaxStartups 50\n\
         PrintMotd no\nPrintLastLog no\n{}\n",
        host.display(),
        auth.display(),
        std::fs::read_to_string(d.join("sshd_config.extra")).unwrap_or_default(),
    )
}

fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "cpvault-test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", stderr(&o));
}

fn current_user() -> String {
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let o = Command::new("id").arg("-un").output().expect("id -un");
            stdout(&o).trim().to_string()
        }
    }
}

/// Pids whose parent is `pid`, from /proc (the per-connection sshd processes).
fn children_of(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces or parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid == pid.to_string()).then_some(name)
        })
        .collect()
}

#[test]
#[ignore = "needs openssh-server"]
fn a_command_runs_over_ssh_with_the_client_key() {
    let s = Sshd::start();
    let o = s.ssh("echo hi");
    assert!(o.status.success(), "{o:?}\n{}", s.log());
    assert_eq!(stdout(&o), "hi\n");
    let kh = std::fs::read_to_string(s.known_hosts()).unwrap();
    assert!(
        kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", s.port())),
        "{kh}"
    );
}

#[test]
#[ignore = "needs openssh-server"]
fn an_unknown_or_changed_host_key_is_refused() {
    let s = Sshd::start();
    for (known_hosts, expected) in [
        (s.empty_known_hosts(), "Host key verification failed"),
        (
            s.wrong_known_hosts(),
            "REMOTE HOST IDENTIFICATION HAS CHANGED",
        ),
    ] {
        let o = s.ssh_command(&known_hosts).arg("true").output().unwrap();
        assert!(
            !o.status.success() && stderr(&o).contains(expected),
            "{o:?}"
        );
    }
}

#[test]
#[ignore = "needs openssh-server"]
fn two_servers_run_at_once() {
    let (a, b) = (Sshd::start(), Sshd::start());
    assert_ne!(a.port(), b.port());
    for s in [&a, &b] {
        let o = s.ssh("echo $SSH_CONNECTION");
        assert!(o.status.success(), "{o:?}\n{}", s.log());
        let conn = stdout(&o);
        assert!(
            conn.trim_end().ends_with(&format!(" {}", s.port())),
            "{conn}"
        );
    }
}
