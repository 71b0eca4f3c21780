use std::process::{Command, Stdio};

use crate::support::*;

#[test]
#[ignore = "needs age, zstd and tar (apt-get install age zstd tar); CI runs it"]
fn stock_age_zstd_tar_open_an_archive_and_yield_the_same_files() {
    require("age", "age");
    require("zstd", "zstd");
    require("tar", "tar");
    let w = World::new();
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snapshot.db"), 64);
    let reference = w.backup(&["--etcd-snapshot-file", "snapshot.db", "--pki-dir", "pki"]);

    let out = w.path("by-hand");
    std::fs::create_dir(&out).unwrap();
    let script = format!(
        "set -euo pipefail; age -d -i '{}' '{}' | zstd -d | tar -x -C '{}'",
        w.key.display(),
        w.archive(&reference).display(),
        out.display()
    );
    let st = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(st.success(), "age | zstd | tar failed");

    let got = tree(&out.join("pki"));
    assert_eq!(got, tree(&w.path("pki")), "PKI files and modes");
    assert_eq!(
        std::fs::read(out.join("etcd/snapshot.db")).unwrap(),
        std::fs::read(w.path("snapshot.db")).unwrap()
    );
    let format: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("format.json")).unwrap()).unwrap();
    assert_eq!(
        format,
        serde_json::json!({"format": "cpvault-archive", "version": 1})
    );
    // The inner manifest is a manifest the tool writes, so it validates too.
    let inner: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_schema_valid(&inner);
    assert!(inner.get("archive").is_none());

    // tar lists format.json first and manifest.json last.
    let list = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -d | tar -t",
            w.key.display(),
            w.archive(&reference).display()
        ))
        .output()
        .unwrap();
    let names: Vec<String> = stdout(&list).lines().map(String::from).collect();
    assert_eq!(names.first().map(String::as_str), Some("format.json"));
    assert_eq!(names.last().map(String::as_str), Some("manifest.json"));
}

#[test]
#[ignore = "needs age (apt-get install age); CI runs it"]
fn an_archive_for_an_ssh_ed25519_recipient_opens_with_the_ssh_key() {
    require("age", "age");
    require("ssh-keygen", "openssh-client");
    let w = World::new();
    let key = w.path("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(w.path("id_ed25519.pub")).unwrap();
    fake_snapshot(&w.path("s.db"), 8);
    let out = w.run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        public.trim(),
        "--etcd-snapshot-file",
        "s.db",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    let deep = w.run(&["verify", &reference, "-i", key.to_str().unwrap()]);
    assert!(deep.status.success(), "{}{}", stdout(&deep), stderr(&deep));
    // And the stock age opens it with the same SSH key.
    let o = Command::new("age")
        .args([
            "-d",
            "-i",
            key.to_str().unwrap(),
            w.archive(&reference).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
