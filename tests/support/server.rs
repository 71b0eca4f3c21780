//! A test server run as a child process: started with its output in a log file in a temp dir
//! of its own, polled until it says it is ready, and killed (and reaped) on drop. A server
//! that exits or is not ready in time fails the test with its log; it is never skipped. Also
//! the one raw HTTP/1.1 request that start-up checks send before any client exists. What
//! "ready" means is each server's own business, never decided here.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process; killed on drop.
pub struct ServerProcess {
    child: Child,
    name: String,
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the command `build` makes for a fresh temp dir (its stdin closed, its stdout
    /// and stderr into `NAME.log` in that dir). `name` names the server in failures.
    pub fn spawn(name: &str, build: impl FnOnce(&Path) -> Command) -> ServerProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let child = build(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        ServerProcess {
            child,
            name: name.into(),
            dir,
        }
    }

    /// The server's own temp dir (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }

    /// Polls `ready` every `poll` until it holds; fails the test, quoting the log, when the
    /// process exits first or `within` passes.
    pub fn wait_ready(
        &mut self,
        within: Duration,
        poll: Duration,
        mut ready: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !ready() {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("{} exited ({exit}): {}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(poll);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One bodiless HTTP/1.1 request to `addr` (`host:port`) on a fresh connection the server
/// closes after answering: the response's status line, or `None` while nothing answers.
pub fn status_line(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "Content-Length: 0\r\nConnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.lines().next()?.to_string()).filter(|l| !l.is_empty())
}
