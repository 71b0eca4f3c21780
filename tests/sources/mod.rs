//! Backup sources against real servers: etcd over gRPC (plain and mutual TLS, directly,
//! through the SSH connection or through the API server's port-forward), a real sshd (PKI
//! with `tar`, etcdctl on the "node"), and the Kubernetes test API server whose exec runs
//! etcdctl for real against the test etcd and whose port-forward reaches it. Every success
//! case restores the extracted snapshot with `etcdctl snapshot restore`, starts etcd on it,
//! and reads the keys back; every failure case checks the one-line message and that nothing
//! was committed.
use std::path::Path;
use std::process::Output;

use crate::support::*;

// etcd over gRPC: plain and mutual TLS, wrong CA or no client certificate, etcd down.
mod grpc;
// SSH: PKI with tar, etcdctl on the node, host keys, client keys, sudo, Ctrl-C.
mod ssh;
// Kubernetes exec into the etcd pod (kubeadm and GKE user clusters), profile and auth errors.
pub(crate) mod kube;
// The gke-admin profile alone: the node and its SSH key found through the API.
mod gke_admin;
// etcd over gRPC through the SSH connection; the fallback to it from exec and etcdctl.
mod tunnel;
// etcd over gRPC through the API server's port-forward to the etcd pod.
mod portforward;
// Clusters from the config file: `backup --all`, one cluster by name, typos refused.
mod clusters;

const KEYS: usize = 40;

/// Puts the keys every restore must bring back.
pub(crate) fn load(etcd: &Etcd) {
    for i in 0..KEYS {
        etcd.put(
            &format!("/registry/configmaps/kube-system/cm-{i:03}"),
            &format!("value-{i}"),
        );
    }
}

/// Extracts `reference`, restores its snapshot with etcdctl, starts etcd on it, and checks
/// that exactly the keys put before the backup are there.
pub(crate) fn assert_restores(w: &World, reference: &str, to: &str) -> std::path::PathBuf {
    let out = w.extract(reference, to);
    let etcd = restore_snapshot(
        &out.join("etcd/snapshot.db"),
        &w.path(&format!("{to}-etcd")),
    );
    for i in 0..KEYS {
        assert_eq!(
            etcd.get(&format!("/registry/configmaps/kube-system/cm-{i:03}"))
                .as_deref(),
            Some(format!("value-{i}").as_str()),
            "key {i} after restore"
        );
    }
    assert_eq!(
        etcd.get("/registry/late"),
        None,
        "a key written after the backup came back"
    );
    out
}

pub(super) fn manifest(w: &World, reference: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.manifest(reference)).unwrap()).unwrap()
}

/// The etcd facts every gRPC snapshot (direct, tunnel, port-forward) records: the hash
/// trailer, a revision at least `KEYS`, and etcd's cluster id, member id and version.
pub(super) fn assert_grpc_facts(m: &serde_json::Value) {
    let e = &m["etcd"];
    assert_eq!(e["hash_trailer"], true, "{m:#}");
    assert!(e["revision"].as_i64().unwrap() >= KEYS as i64, "{m:#}");
    for field in ["cluster_id", "member_id", "version"] {
        assert!(
            e[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {m:#}"
        );
    }
}

pub(crate) fn backup(w: &World, args: &[&str]) -> Output {
    let mut full = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    full.extend_from_slice(args);
    w.run(&full)
}

/// Asserts a failed backup: exit 1, a one-line error containing every `needle`, no panic,
/// nothing listed.
pub(crate) fn assert_fails(w: &World, out: &Output, needles: &[&str]) {
    assert_no_panic(out);
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line in: {err}"));
    for n in needles {
        assert!(line.contains(n), "{n:?} missing from: {line}");
    }
    let list = w.run(&["list", "--output", "json"]);
    assert_eq!(stdout(&list).trim(), "[]", "something was committed");
}

/// An etcdctl wrapper for the "node" that records where it saved the snapshot, so a test
/// can check that the temp dir is gone afterwards (other tests run at the same time, so
/// /tmp itself cannot be compared). Only `snapshot save` is recorded, not the member list
/// and status calls beside it.
pub(super) fn recording_etcdctl(w: &World) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = w.path("recording-etcdctl");
    let record = w.path("saved-at");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor last; do :; done\ncase \" $* \" in *' snapshot save '*) echo \"$last\" >> '{}';; esac\nexec etcdctl \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, record)
}

/// Asserts the snapshot was saved (into a private temp dir) and the dir is gone.
pub(super) fn assert_temp_dir_removed(record: &Path) {
    let saved = std::fs::read_to_string(record).expect("etcdctl was run");
    let saved = Path::new(saved.trim());
    let dir = saved.parent().unwrap();
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("cpvault-snapshot."),
        "{saved:?}"
    );
    assert!(!dir.exists(), "temp dir {dir:?} left on the node");
}
