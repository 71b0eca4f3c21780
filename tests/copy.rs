//! copy: between the local store and a real S3 server (moto) both ways, verified on both
//! sides; already-present backups skipped; a corrupted source archive refused with nothing
//! committed at the target.

use crate::support::*;

#[test]
#[ignore = "needs moto_server (pip install 'moto[server]'); CI runs it"]
fn copy_between_local_and_moto_round_trips_and_verifies_on_both_sides() {
    let w = World::new();
    let moto = S3Server::moto();
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snap.db"), 300);
    let refs: Vec<String> = (0..2)
        .map(|_| w.backup(&["--etcd-snapshot-file", "snap.db", "--pki-dir", "pki"]))
        .collect();
    let local = w.store.to_str().unwrap().to_string();
    let s3 = moto.url("copied");
    let key = w.key.to_str().unwrap().to_string();
    let cwd = w.dir.path();

    let out = moto.cpvault(cwd, &["copy", "--store", &local, "--all", "--to", &s3]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 copied, 0 already there, 0 failed"),
        "{}",
        stdout(&out)
    );
    let listed = moto.cpvault(cwd, &["list", "--store", &s3, "--output", "json"]);
    let mut got = listed_refs(&listed);
    got.sort();
    let mut want = refs.clone();
    want.sort();
    assert_eq!(got, want);
    let verify = moto.cpvault(cwd, &["verify", "--store", &s3, "--all", "-i", &key]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    // The manifests are byte-identical copies.
    for r in &refs {
        let json = moto.cpvault(cwd, &["show", "--store", &s3, r, "--output", "json"]);
        let there: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        let here: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.manifest(r)).unwrap()).unwrap();
        assert_eq!(there, here);
    }

    // Again: nothing to do.
    let again = moto.cpvault(cwd, &["copy", "--store", &local, "--all", "--to", &s3]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("0 copied, 2 already there"),
        "{}",
        stdout(&again)
    );

    // And back, from S3 into a new local store.
    let back = w.path("back");
    let out = moto.cpvault(
        cwd,
        &[
            "copy",
            "--store",
            &s3,
            &refs[0],
            "--to",
            back.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let verify = cpvault_in(
        cwd,
        &[
            "verify",
            "--store",
            back.to_str().unwrap(),
            "--all",
            "-i",
            &key,
        ],
    );
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert_eq!(
        std::fs::read(back.join(format!("{}.tar.zst.age", refs[0]))).unwrap(),
        std::fs::read(w.archive(&refs[0])).unwrap()
    );
}

#[test]
#[ignore = "needs moto_server (pip install 'moto[server]'); CI runs it"]
fn a_corrupted_source_archive_is_not_copied_and_nothing_is_committed() {
    let w = World::new();
    let moto = S3Server::moto();
    fake_snapshot(&w.path("snap.db"), 100);
    let r = w.backup(&["--etcd-snapshot-file", "snap.db"]);
    let archive = w.archive(&r);
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&archive, bytes).unwrap();
    let s3 = moto.url("copied");
    let out = moto.cpvault(
        w.dir.path(),
        &[
            "copy",
            "--store",
            w.store.to_str().unwrap(),
            &r,
            "--to",
            &s3,
        ],
    );
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was committed"),
        "{}",
        stderr(&out)
    );
    let listed = moto.cpvault(w.dir.path(), &["list", "--store", &s3, "--output", "json"]);
    assert_eq!(stdout(&listed).trim(), "[]");
    // Not even an orphan archive: the upload was aborted before it completed.
    let plan = moto.cpvault(
        w.dir.path(),
        &[
            "prune",
            "--store",
            &s3,
            "--keep-last",
            "1",
            "--grace-hours",
            "1",
            "--dry-run",
            "--output",
            "json",
        ],
    );
    let text = stdout(&plan);
    assert!(
        !text.contains(".tar.zst.age"),
        "an archive object was left: {text}"
    );
}

#[test]
fn copy_to_the_same_store_or_without_backups_is_a_usage_error() {
    let w = World::new();
    let local = w.store.to_str().unwrap();
    std::fs::create_dir_all(&w.store).unwrap();
    let same = w.run(&["copy", "--all", "--to", local]);
    assert_eq!(same.status.code(), Some(2), "{}", stderr(&same));
    let none = w.run(&["copy", "--to", w.path("other").to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
}
