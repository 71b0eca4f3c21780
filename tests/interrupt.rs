// Interrupted commands leave no plaintext behind: extract stopped by SIGINT, SIGTERM or SIGHUP
// mid-stream removes its hidden work dir (which holds the CA keys) and leaves --to empty.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

// extract killed by a signal left a directory with the plaintext CA key.
#[test]
fn extract_interrupted_by_a_signal_leaves_no_file_of_its_own() {
    let w = World::new();
    make_pki(&w.path("pki"));
    // Random bytes do not compress: a big archive keeps extract busy long enough to signal it.
    let st = Command::new("bash")
        .arg("-c")
        .arg("head -c 400000000 /dev/urandom > big.db")
        .current_dir(w.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let r = w.backup(&["--file", "big.db", "--pki-dir", "pki"]);
    for signal in ["INT", "TERM", "HUP"] {
        let to = w.path(&format!("out-{signal}"));
        let child = cpvault_cmd(w.dir.path())
            .args(["extract", &r, "-i", w.key.to_str().unwrap(), "--to"])
            .arg(&to)
            .args(["--store", w.store.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until plaintext is being written into the work dir, then signal.
        let mut work = None;
        let out = signal_when(child, signal, || {
            work = std::fs::read_dir(w.dir.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".cpvault-extract-"))
                        && p.join("files/big.db").exists()
                });
            work.is_some()
        });
        let work = work.unwrap();
        assert!(
            stderr(&out).contains("interrupted"),
            "SIG{signal}: {}",
            stderr(&out)
        );
        assert!(
            !work.exists(),
            "SIG{signal}: the work dir {work:?} is still there"
        );
        let left = std::fs::read_dir(&to).map_or(0, |d| d.count());
        assert_eq!(left, 0, "SIG{signal}: files left in --to");
    }
}

// A drill holds the whole backup in plaintext (CA keys included) in its temp dir.
#[test]
#[ignore = "needs etcd, etcdctl and openssl (apt-get install etcd-server etcd-client openssl); CI runs it"]
fn drill_interrupted_by_a_signal_leaves_no_plaintext() {
    require("etcd", "etcd-server");
    require("etcdctl", "etcd-client");
    require("openssl", "openssl");
    let w = World::new();
    make_pki(&w.path("pki"));
    // An incompressible "snapshot" with etcd's sha256 trailer, big enough to signal mid-way.
    let st = Command::new("bash")
        .arg("-c")
        .arg("set -e; head -c 399998976 /dev/urandom > s.db; openssl dgst -sha256 -binary s.db > t; cat t >> s.db")
        .current_dir(w.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let r = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "pki"]);
    for signal in ["INT", "TERM", "HUP"] {
        let tmp = w.path(&format!("tmp-{signal}"));
        std::fs::create_dir(&tmp).unwrap();
        let child = cpvault_cmd(w.dir.path())
            .env("TMPDIR", &tmp)
            .args(["drill", &r, "-i", w.key.to_str().unwrap()])
            .args(["--store", w.store.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        signal_when(child, signal, || {
            std::fs::read_dir(&tmp)
                .unwrap()
                .flatten()
                .any(|e| walk_has_file(&e.path()))
        });
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "SIG{signal}: drill left {left:?}");
    }
}

fn walk_has_file(p: &std::path::Path) -> bool {
    if p.is_file() {
        return true;
    }
    std::fs::read_dir(p).is_ok_and(|d| d.flatten().any(|e| walk_has_file(&e.path())))
}

// cpvault panicked (exit 101) when its stderr was a pipe nobody read any more and it had a
// note to print.
#[test]
fn a_closed_stderr_pipe_is_no_panic() {
    let w = World::new();
    fake_snapshot(&w.path("snapshot.db"), 4);
    let r = w.backup(&["--etcd-snapshot-file", "snapshot.db"]);
    let mut child = cpvault_cmd(w.dir.path())
        .args(["verify", &r, "--store", w.store.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end goes away before cpvault writes its note.
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("OK"), "{}", stdout(&out));
}

/// Waits (up to a minute) until `ready` says the child is writing plaintext, sends it
/// SIG`signal`, and returns its output once it exited, which must be a failure.
fn signal_when(
    child: std::process::Child,
    signal: &str,
    mut ready: impl FnMut() -> bool,
) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "SIG{signal}: it never started writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "SIG{signal}: it finished anyway");
    out
}
