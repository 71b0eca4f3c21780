//! Store failures on the wire, through a TCP proxy in front of a real S3 server (moto): the
//! store dying in the middle of an upload, and transient connection failures that the
//! client's retries must absorb.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::*;

/// `cpvault` pointed at `endpoint` with moto's other settings and short retries.
fn via(moto: &S3Server, endpoint: &str, cwd: &std::path::Path) -> Command {
    let mut c = cpvault_cmd(cwd);
    c.envs(moto.env())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("CPVAULT_STORE_RETRY_TIMEOUT", "5");
    c
}

#[test]
#[ignore = "needs moto_server (pip install 'moto[server]'); CI runs it"]
fn killing_the_store_mid_upload_fails_naming_the_store_and_commits_nothing() {
    let w = World::new();
    let moto = S3Server::moto();
    let mut proxy = Proxy::start(moto.endpoint.trim_start_matches("http://"), &[]);
    // Incompressible, so the upload takes a while.
    let big = w.path("big.bin");
    let o = Command::new("head")
        .args(["-c", "400000000", "/dev/urandom"])
        .stdout(std::fs::File::create(&big).unwrap())
        .status()
        .unwrap();
    assert!(o.success());
    let store = moto.url("dying");
    let mut child = via(&moto, &proxy.url(), w.dir.path())
        .args([
            "backup",
            "--store",
            &store,
            "--cluster",
            "admin",
            "-r",
            &w.recipient,
            "--file",
            big.to_str().unwrap(),
            "--part-size-mib",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the upload is under way, then kill the store.
    let started = Instant::now();
    while proxy.accepted() == 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the backup ended before the store was killed; the test needs a longer upload"
    );
    proxy.stop();
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "backup hangs after the store died"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&store), "the store is not named: {line}");
    assert!(
        ["connect", "refused", "sending request", "closed", "reset"]
            .iter()
            .any(|c| line.to_lowercase().contains(c)),
        "no cause in: {line}"
    );
    // Straight to the server: no new backup, and no archive left either.
    let list = moto.cpvault(
        w.dir.path(),
        &["list", "--store", &store, "--output", "json"],
    );
    assert_eq!(stdout(&list).trim(), "[]");
}

#[test]
#[ignore = "needs moto_server (pip install 'moto[server]'); CI runs it"]
fn cut_connections_are_retried_and_the_backup_commits() {
    let w = World::new();
    let moto = S3Server::moto();
    // The 1st, 2nd, 4th and 6th connections are cut on accept: whichever requests they carry
    // (the create-if-absent probe, parts, the manifest commit), the client must retry them.
    let proxy = Proxy::start(moto.endpoint.trim_start_matches("http://"), &[0, 1, 3, 5]);
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snap.db"), 2_000);
    let store = moto.url("flaky");
    let out = via(&moto, &proxy.url(), w.dir.path())
        .args([
            "backup",
            "--store",
            &store,
            "--cluster",
            "admin",
            "-r",
            &w.recipient,
            "--etcd-snapshot-file",
            "snap.db",
            "--pki-dir",
            "pki",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(proxy.accepted() > 4, "the cut connections were never tried");
    let key = w.key.to_str().unwrap().to_string();
    let verify = moto.cpvault(
        w.dir.path(),
        &["verify", "--store", &store, "--all", "-i", &key],
    );
    assert!(verify.status.success(), "{}", stdout(&verify));
}
