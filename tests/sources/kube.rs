//! Kubernetes exec against the test API server, whose exec runs etcdctl for real: the
//! kubeadm etcd pod and a GKE user cluster's etcd restore; no matching pod names the labels;
//! a wrong token names the credentials.

use std::path::Path;

use super::{
    assert_fails, assert_restores, assert_temp_dir_removed, backup, load, manifest,
    recording_etcdctl,
};
use crate::support::kubeapi::KubeApi;
use crate::support::tls::EtcdCerts;
use crate::support::*;

/// An API server with a kubeadm/gke-admin layout: a control-plane node, the etcd static pod,
/// and exec paths mapped onto the test etcd's certificates and endpoint.
pub(crate) fn admin_cluster(
    w: &World,
    etcd: &Etcd,
    certs: &EtcdCerts,
) -> (KubeApi, std::path::PathBuf) {
    let api = KubeApi::start();
    api.add_node(
        "admin-cp-1",
        &[("node-role.kubernetes.io/control-plane", "")],
        &[("InternalIP", "10.255.255.1"), ("ExternalIP", "127.0.0.1")],
    );
    api.add_node("admin-worker-1", &[], &[("InternalIP", "10.255.255.2")]);
    api.add_pod(
        "kube-system",
        "etcd-admin-cp-1",
        &[("component", "etcd"), ("tier", "control-plane")],
        &["etcd"],
    );
    api.add_pod(
        "kube-system",
        "kube-apiserver-admin-cp-1",
        &[("component", "kube-apiserver")],
        &["kube-apiserver"],
    );
    map_certs(&api, "/etc/kubernetes/pki/etcd/ca.crt", &certs.ca);
    map_certs(
        &api,
        "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        &certs.client_cert,
    );
    map_certs(
        &api,
        "/etc/kubernetes/pki/etcd/healthcheck-client.key",
        &certs.client_key,
    );
    api.map_exec("https://127.0.0.1:2379", &etcd.endpoint);
    let kubeconfig = w.path("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin");
    (api, kubeconfig)
}

fn map_certs(api: &KubeApi, from: &str, to: &Path) {
    api.map_exec(from, to.to_str().unwrap());
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn kube_exec_in_the_admin_etcd_pod_restores() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let (api, kubeconfig) = admin_cluster(&w, &etcd, &certs);
    let (etcdctl, record) = recording_etcdctl(&w);
    api.map_exec(
        "ETCDCTL_API=3 etcdctl",
        &format!("ETCDCTL_API=3 {}", etcdctl.display()),
    );
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "kubeadm",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no PKI"),
        "the missing PKI is not warned about"
    );
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    let execs = api.execs();
    assert!(execs
        .iter()
        .all(|e| e.pod == "etcd-admin-cp-1" && e.namespace == "kube-system"));
    let save = &execs[0].command;
    assert_eq!(&save[..2], ["sh", "-c"]);
    assert!(
        save[2].contains("--cacert=/etc/kubernetes/pki/etcd/ca.crt"),
        "{save:?}"
    );
    assert!(save[2].contains("--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt"));
    assert!(
        execs.iter().any(|e| e.command[2].starts_with("rm -rf")),
        "no cleanup exec"
    );
    assert!(manifest(&w, &reference)["source"]
        .as_str()
        .unwrap()
        .contains("kube-exec:kube-system/etcd-admin-cp-1"));
    assert_restores(&w, &reference, "out");
    assert_temp_dir_removed(&record);
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn kube_exec_in_a_user_cluster_etcd_restores() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let api = KubeApi::start();
    api.add_pod(
        "user1",
        "kube-etcd-0",
        &[("app", "kube-etcd")],
        &["kube-etcd", "etcd-defrag"],
    );
    map_certs(
        &api,
        "/etcd.local.config/certificates/etcdCA.crt",
        &certs.ca,
    );
    map_certs(
        &api,
        "/etcd.local.config/certificates/etcd.crt",
        &certs.client_cert,
    );
    map_certs(
        &api,
        "/etcd.local.config/certificates/etcd.key",
        &certs.client_key,
    );
    api.map_exec("https://127.0.0.1:2379", &etcd.endpoint);
    let kubeconfig = w.path("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin");
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "gke-user",
            "--namespace",
            "user1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    let execs = api.execs();
    assert!(execs
        .iter()
        .all(|e| e.container.as_deref() == Some("kube-etcd") && e.namespace == "user1"));
    assert_restores(&w, &reference, "out");
}

#[test]
fn no_etcd_pod_matching_the_profile_fails_naming_the_labels() {
    let w = World::new();
    let api = KubeApi::start();
    api.add_pod(
        "kube-system",
        "coredns-1",
        &[("k8s-app", "kube-dns")],
        &["coredns"],
    );
    let kubeconfig = w.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "c");
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "kubeadm",
        ],
    );
    assert_fails(
        &w,
        &out,
        &["component=etcd,tier=control-plane", "--profile gke-user"],
    );
    let user = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "gke-user",
            "--namespace",
            "nosuch",
        ],
    );
    assert_fails(&w, &user, &["kube-etcd-0", "nosuch", "--namespace"]);
}

#[test]
fn a_wrong_token_fails_naming_the_credentials() {
    let w = World::new();
    let api = KubeApi::start();
    let kubeconfig = w.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig, "c");
    let text = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace(api.token(), "not-the-token");
    std::fs::write(&kubeconfig, text).unwrap();
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "kubeadm",
        ],
    );
    assert_fails(&w, &out, &["401", "refresh the kubeconfig"]);
}
