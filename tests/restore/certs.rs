//! A backup whose PKI holds a certificate that expired before restore day: preflight refuses
//! it, naming the certificate and `--force-expired`, before anything on the node changes;
//! the plan lists the check; `--force-expired` restores it (with a warning); `--to-dir` only
//! warns.

use super::*;
use crate::support::tls::{day_from_now, LeafKey, TestCa};

/// The sandbox node's PKI with a real CA and an apiserver certificate that ended in 2021.
fn expired_scene() -> Scene {
    scene_with(|node| {
        let pki = node.pki_dir();
        let ca = TestCa::new(&pki, "ca");
        ca.issue(&pki, "apiserver", (2021, 1, 1), LeafKey::Own);
        ca.issue(
            &pki,
            "etcd/healthcheck-client",
            day_from_now(300),
            LeafKey::Own,
        );
    })
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn an_expired_certificate_is_refused_in_preflight_unless_force_expired() {
    let s = expired_scene();
    let before = s.node.snapshot_tree();
    let keys_before = s.node.keys();
    let out = s.run(&["--yes"], &[]);
    let err = stderr(&out);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(
        line.contains("1 certificate(s) already expired")
            && line.contains("pki/apiserver.crt (notAfter 2021-01-01T00:00:00Z)")
            && !line.contains("healthcheck-client")
            && line.contains("--force-expired")
            && line.contains("nothing was changed"),
        "{line}"
    );
    assert!(
        !err.contains("restore id"),
        "refused after it started: {err}"
    );
    assert_eq!(s.node.snapshot_tree(), before, "preflight changed the node");
    assert_eq!(s.node.keys(), keys_before);
    assert_eq!(std::fs::read_dir(s.staging()).unwrap().count(), 0);

    // The plan says what preflight checks; a dry run is refused the same way.
    let dry = s.run(&["--dry-run", "--force-expired"], &[]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("no certificate in the backup has expired (unless --force-expired)"),
        "{}",
        stdout(&dry)
    );
    let dry = s.run(&["--dry-run"], &[]);
    assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
    assert_eq!(s.node.snapshot_tree(), before);

    // --force-expired restores, and says which certificates need renewing.
    let out = s.run(&["--yes", "--force-expired"], &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}\n{}", s.node.log());
    assert!(
        err.contains("1 expired certificate(s): pki/apiserver.crt"),
        "{err}"
    );
    assert_eq!(s.keys_when_healthy(), s.keys_at_backup);
    assert_eq!(tree(&s.node.pki_dir()), s.pki_at_backup);
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn to_dir_restores_a_backup_with_an_expired_certificate_with_a_warning() {
    let w = World::new();
    let etcd = Etcd::start();
    etcd.put("/registry/k", "v");
    let pki = w.path("pki");
    let ca = TestCa::new(&pki, "ca");
    ca.issue(&pki, "apiserver", (2021, 1, 1), LeafKey::Own);
    let reference = w.backup(&["--etcd-endpoint", &etcd.endpoint, "--pki-dir", "pki"]);
    let out = w.run(&[
        "restore",
        &reference,
        "--allow-unsigned",
        "-i",
        w.key.to_str().unwrap(),
        "--to-dir",
        w.path("restored").to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning:") && err.contains("pki/apiserver.crt (notAfter 2021-01-01"),
        "{err}"
    );
    assert_eq!(tree(&w.path("restored/pki")), tree(&pki));
}
