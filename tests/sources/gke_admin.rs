//! The gke-admin profile alone: the admin node and its SSH key found through the API (the
//! key from a secret, never left on local disk), etcd and PKI captured; a secret without the
//! key field names the field.

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
    // The key from the secret never stays on local disk.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("cpvault-node-key.")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
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
