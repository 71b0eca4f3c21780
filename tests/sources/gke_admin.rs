//! The gke-admin profile alone: the admin node and its SSH key found through the API (the
//! key from a secret, never on local disk, not even while the backup runs), etcd and PKI
//! captured; a secret without the key field names the field.

use super::kube::admin_cluster;
use super::{assert_fails, assert_restores, backup, load, manifest};
use crate::support::sshd::Sshd;
use crate::support::tls::EtcdCerts;
use crate::support::*;

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn gke_admin_profile_alone_finds_the_node_and_its_key_and_captures_etcd_and_pki() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let sshd = Sshd::start();
    let (api, kubeconfig) = admin_cluster(&w, &etcd, &certs);
    let key = std::fs::read(sshd.client_key()).unwrap();
    api.add_secret("kube-system", "sshkeys", &[("vsphere_tmp", &key)]);
    let node_pki = w.path("node/etc/kubernetes/pki");
    make_pki(&node_pki);
    let before = tree(&node_pki);
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "gke-admin",
            // The test node's sshd: its user, port and known_hosts, and where the PKI is.
            "--ssh-user",
            &sshd.user(),
            "--ssh-port",
            &sshd.port().to_string(),
            "--ssh-known-hosts",
            sshd.known_hosts().to_str().unwrap(),
            "--ssh-pki-dir",
            node_pki.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("/secrets/sshkeys")),
        "the key was not read from the secret"
    );
    assert!(manifest(&w, &reference)["source"]
        .as_str()
        .unwrap()
        .contains("node:admin-cp-1"));
    let out = assert_restores(&w, &reference, "out");
    assert_eq!(tree(&out.join("pki")), before);
    assert_eq!(tree(&node_pki), before, "the node's PKI changed");
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_secret_without_the_key_field_fails_naming_the_field() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    let (api, kubeconfig) = admin_cluster(&w, &etcd, &certs);
    api.add_secret("kube-system", "sshkeys", &[("other", b"x".as_slice())]);
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "gke-admin",
        ],
    );
    assert_fails(&w, &out, &["vsphere_tmp", "other", "--ssh-key"]);
}

/// Regular files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => found.extend(files_containing(&path, needle)),
            Ok(t) if t.is_file() => {
                // A file can vanish between the listing and the read.
                if let Ok(bytes) = std::fs::read(&path) {
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        found.push(path);
                    }
                }
            }
            _ => {}
        }
    }
    found
}

// Regression: the node key from kube-system/sshkeys sat in a 0600 temp file for the whole
// backup, where a SIGKILL (or a copy of the temp dir) would find it.
#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn the_node_key_from_the_secret_is_never_in_a_local_file_while_the_backup_runs() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let sshd = Sshd::start();
    let (api, kubeconfig) = admin_cluster(&w, &etcd, &certs);
    let key = std::fs::read(sshd.client_key()).unwrap();
    api.add_secret("kube-system", "sshkeys", &[("vsphere_tmp", &key)]);
    // The key's body (its second line), which any file holding the key contains.
    let needle = key
        .split(|b| *b == b'\n')
        .nth(1)
        .expect("a PEM/OpenSSH key has a body")
        .to_vec();
    assert!(needle.len() > 20);
    let node_pki = w.path("node/etc/kubernetes/pki");
    make_pki(&node_pki);
    let tmp = w.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let store = w.store.to_str().unwrap().to_string();
    let (port, user) = (sshd.port().to_string(), sshd.user());
    let mut child = cpvault_cmd(w.dir.path())
        .env("TMPDIR", &tmp)
        .args([
            "backup",
            "--cluster",
            "admin",
            "-r",
            &w.recipient,
            "--store",
            &store,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "gke-admin",
            "--ssh-user",
            &user,
            "--ssh-port",
            &port,
            "--ssh-known-hosts",
            sshd.known_hosts().to_str().unwrap(),
            "--ssh-pki-dir",
            node_pki.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut scans = 0u32;
    let mut seen = vec![];
    while child.try_wait().unwrap().is_none() {
        seen.extend(files_containing(&tmp, &needle));
        scans += 1;
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(scans > 10, "the backup ended before it could be watched");
    assert!(
        seen.is_empty(),
        "the node key was in a local file: {seen:?}"
    );
    assert!(files_containing(&tmp, &needle).is_empty());
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("/secrets/sshkeys")),
        "the key was not read from the secret"
    );
}
