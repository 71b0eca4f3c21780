use crate::support::*;

#[test]
fn backup_list_verify_extract_gives_identical_files_and_modes() {
    let w = World::new();
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snapshot.db"), 300);
    std::fs::write(w.path("admin.conf"), "apiVersion: v1\nkind: Config\n").unwrap();
    let reference = w.backup(&[
        "--etcd-snapshot-file",
        "snapshot.db",
        "--pki-dir",
        "pki",
        "--file",
        "admin.conf",
        "--tag",
        "env=test",
    ]);
    assert!(reference.starts_with("admin/"), "{reference}");

    let list = w.run(&["list", "--output", "json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        format!(
            "{}/{}",
            listed[0]["cluster"].as_str().unwrap(),
            listed[0]["id"].as_str().unwrap()
        ),
        reference
    );
    assert_eq!(listed[0]["tags"]["env"], "test");
    assert_schema_valid(&listed[0]);
    // The outer manifest must not leak plaintext hashes.
    assert!(listed[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e.get("sha256").is_none()));

    let shallow = w.run(&["verify", &reference]);
    assert!(shallow.status.success(), "{}", stderr(&shallow));
    assert!(
        stdout(&shallow).contains("ciphertext only"),
        "{}",
        stdout(&shallow)
    );

    let deep = w.run(&[
        "verify",
        &reference,
        "-i",
        w.key.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(deep.status.success(), "{}{}", stdout(&deep), stderr(&deep));
    let reports: serde_json::Value = serde_json::from_slice(&deep.stdout).unwrap();
    let checks: Vec<(String, String)> = reports[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for name in [
        "ciphertext",
        "decrypt",
        "decompress",
        "format",
        "entries",
        "etcd-trailer",
        "manifests",
    ] {
        assert!(
            checks.contains(&(name.to_string(), "ok".to_string())),
            "{name} not ok in {checks:?}"
        );
    }

    let out = w.extract(&reference, "out");
    let mut expected: Vec<(String, u32, Vec<u8>)> = tree(&w.path("pki"))
        .into_iter()
        .map(|(p, m, b)| (format!("pki/{p}"), m, b))
        .collect();
    let snap = std::fs::read(w.path("snapshot.db")).unwrap();
    expected.push(("etcd/snapshot.db".into(), 0o644, snap));
    expected.push((
        "files/admin.conf".into(),
        0o644,
        std::fs::read(w.path("admin.conf")).unwrap(),
    ));
    expected.sort();
    // The snapshot and admin.conf were created with the default umask; compare their real modes.
    for e in expected.iter_mut() {
        if !e.0.starts_with("pki/") {
            let src = if e.0.starts_with("etcd/") {
                "snapshot.db"
            } else {
                "admin.conf"
            };
            e.1 = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(w.path(src)).unwrap().permissions(),
            ) & 0o7777;
        }
    }
    assert_eq!(tree(&out), expected);
}

#[test]
fn extract_refuses_a_non_empty_directory_and_leaves_it_alone() {
    let w = World::new();
    make_pki(&w.path("pki"));
    let reference = w.backup(&["--pki-dir", "pki"]);
    let out = w.path("busy");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let ex = w.run(&[
        "extract",
        &reference,
        "-i",
        w.key.to_str().unwrap(),
        "--to",
        out.to_str().unwrap(),
    ]);
    assert_eq!(ex.status.code(), Some(2), "{}", stderr(&ex));
    assert!(stderr(&ex).contains("not empty"), "{}", stderr(&ex));
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn backup_json_output_is_the_committed_outer_manifest() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 10);
    let out = w.run(&[
        "backup",
        "--cluster",
        "user-1",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "s.db",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_schema_valid(&printed);
    let reference = format!("user-1/{}", printed["id"].as_str().unwrap());
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&reference)).unwrap()).unwrap();
    assert_eq!(printed, stored);
    assert_eq!(stored["etcd"]["hash_trailer"], true);
    assert_eq!(stored["archive"]["recipients"][0], w.recipient.as_str());
    assert_eq!(
        stored["archive"]["size"],
        std::fs::metadata(w.archive(&reference)).unwrap().len()
    );
}

#[test]
fn show_prints_the_manifest_and_latest_resolves_to_the_newest() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 4);
    let first = w.backup(&["--etcd-snapshot-file", "s.db"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = w.backup(&["--etcd-snapshot-file", "s.db"]);
    assert!(second > first);
    let show = w.run(&["show", "admin/latest", "--output", "json"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let m: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(format!("admin/{}", m["id"].as_str().unwrap()), second);
    let text = w.run(&["show", &first]);
    assert!(
        stdout(&text).contains(&first) && stdout(&text).contains("etcd/snapshot.db"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn a_large_snapshot_streams_through_with_multi_chunk_entries() {
    // Several pipeline chunks and upload parts, with a size that is not a multiple of anything.
    let w = World::new();
    let big = w.path("big.db");
    let mut data = vec![0u8; 21 * 1024 * 1024 + 12345];
    let mut x: u64 = 88172645463325252;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x % 7) as u8;
    }
    std::fs::write(&big, &data).unwrap();
    let reference = w.backup(&["--etcd-snapshot-file", "big.db", "--part-size-mib", "5"]);
    let out = w.extract(&reference, "out");
    assert!(std::fs::read(out.join("etcd/snapshot.db")).unwrap() == data);
}
