use crate::support::*;

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn an_extracted_snapshot_restores_with_etcdctl_and_serves_the_keys() {
    let w = World::new();
    let etcd = Etcd::start();
    for i in 0..50 {
        etcd.put(
            &format!("/registry/configmaps/default/cm-{i}"),
            &format!("value-{i}"),
        );
    }
    etcd.put(
        "/registry/secrets/kube-system/sshkeys",
        "vsphere_tmp=c2VjcmV0",
    );
    let snap = w.path("snapshot.db");
    etcd.snapshot(&snap);
    // Written after the snapshot: must not come back.
    etcd.put("/registry/configmaps/default/late", "after");
    drop(etcd);

    make_pki(&w.path("pki"));
    let reference = w.backup(&["--etcd-snapshot-file", "snapshot.db", "--pki-dir", "pki"]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&reference)).unwrap()).unwrap();
    assert_eq!(
        m["etcd"]["hash_trailer"], true,
        "a real etcd snapshot carries its sha256 trailer"
    );

    let out = w.extract(&reference, "out");

    let etcd = restore_snapshot(&out.join("etcd/snapshot.db"), &w.path("restored"));
    for i in 0..50 {
        assert_eq!(
            etcd.get(&format!("/registry/configmaps/default/cm-{i}"))
                .as_deref(),
            Some(format!("value-{i}").as_str())
        );
    }
    assert_eq!(
        etcd.get("/registry/secrets/kube-system/sshkeys").as_deref(),
        Some("vsphere_tmp=c2VjcmV0")
    );
    assert_eq!(etcd.get("/registry/configmaps/default/late"), None);
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn a_snapshot_whose_trailer_does_not_match_fails_the_backup_and_commits_nothing() {
    let w = World::new();
    let etcd = Etcd::start();
    etcd.put("/registry/a", "b");
    let snap = w.path("snapshot.db");
    etcd.snapshot(&snap);
    drop(etcd);
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&snap, &bytes).unwrap();
    let out = w.run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "snapshot.db",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("trailer does not match"),
        "{}",
        stderr(&out)
    );
    let list = w.run(&["list", "--output", "json"]);
    assert_eq!(stdout(&list).trim(), "[]");
    // And no archive object is left behind either.
    let leftovers: Vec<_> = walk_files(&w.store);
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
