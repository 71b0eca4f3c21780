//! The shipped RBAC (`deploy/kubernetes/rbac.yaml`, `rbac-user-cluster.yaml`) against the
//! calls the kube sources really make: the test API server enforces exactly those Roles and
//! bindings for the ServiceAccount of `serviceaccount.yaml`, a real `cpvault backup` passes
//! with them, and with any one rule (or exec verb) removed it fails with the API server's
//! Forbidden message — so every rule is needed and the enforcement is real.

use serde_json::Value;

use super::manifests;
use crate::sources::kube::admin_cluster;
use crate::sources::{assert_fails, assert_restores, backup, load};
use crate::support::kubeapi::rbac::Rbac;
use crate::support::kubeapi::KubeApi;
use crate::support::sshd::Sshd;
use crate::support::tls::EtcdCerts;
use crate::support::*;

/// The RBAC of `files` for the shipped ServiceAccount.
fn shipped(files: &[&str]) -> (Vec<Value>, Rbac) {
    let sa = &manifests("kubernetes/serviceaccount.yaml")[0]["metadata"];
    let objects: Vec<Value> = files.iter().flat_map(|f| manifests(f)).collect();
    let rbac = Rbac::for_service_account(
        sa["namespace"].as_str().unwrap(),
        sa["name"].as_str().unwrap(),
        &objects,
    );
    (objects, rbac)
}

/// Every way to take one permission away: each rule dropped, and each verb of a rule with
/// several. Returns a description and the weakened objects.
fn weakened(objects: &[Value]) -> Vec<(String, Vec<Value>)> {
    let mut out = vec![];
    for (i, o) in objects.iter().enumerate() {
        let Some(rules) = o["rules"].as_array() else {
            continue;
        };
        for (j, rule) in rules.iter().enumerate() {
            let what = format!("{} {}: {}", o["kind"], o["metadata"]["name"], rule);
            let mut w = objects.to_vec();
            w[i]["rules"].as_array_mut().unwrap().remove(j);
            out.push((format!("without rule {what}"), w));
            let verbs = rule["verbs"].as_array().unwrap();
            if verbs.len() > 1 {
                for (k, verb) in verbs.iter().enumerate() {
                    let mut w = objects.to_vec();
                    w[i]["rules"][j]["verbs"].as_array_mut().unwrap().remove(k);
                    out.push((format!("without verb {verb} of {what}"), w));
                }
            }
        }
    }
    out
}

fn rbac_of(objects: &[Value]) -> Rbac {
    let sa = &manifests("kubernetes/serviceaccount.yaml")[0]["metadata"];
    Rbac::for_service_account(
        sa["namespace"].as_str().unwrap(),
        sa["name"].as_str().unwrap(),
        objects,
    )
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn gke_admin_backup_passes_with_the_shipped_rbac_and_fails_without_any_one_rule() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let sshd = Sshd::start();
    let (api, kubeconfig) = admin_cluster(&w, &etcd, &certs);
    let key = std::fs::read(sshd.client_key()).unwrap();
    api.add_secret("kube-system", "sshkeys", &[("vsphere_tmp", &key)]);
    // Another kube-system secret, which the shipped Role must not open.
    api.add_secret(
        "kube-system",
        "admin-token",
        &[("token", b"secret".as_slice())],
    );
    let node_pki = w.path("node/etc/kubernetes/pki");
    make_pki(&node_pki);
    let port = sshd.port().to_string();
    let args = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--profile",
        "gke-admin",
        "--ssh-user",
        &sshd.user(),
        "--ssh-port",
        &port,
        "--ssh-known-hosts",
        sshd.known_hosts().to_str().unwrap(),
        "--ssh-pki-dir",
        node_pki.to_str().unwrap(),
    ];

    let (objects, rbac) = shipped(&["kubernetes/rbac.yaml"]);
    api.enforce_rbac(rbac);
    let out = backup(&w, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(api.denied(), Vec::<String>::new());
    // The calls the rules were written for were all made (and allowed).
    let requests = api.requests();
    for call in [
        "GET /api/v1/namespaces/kube-system/pods?",
        "/api/v1/namespaces/kube-system/pods/etcd-admin-cp-1/exec?",
        "GET /api/v1/namespaces/kube-system/secrets/sshkeys",
        "GET /api/v1/nodes?",
    ] {
        assert!(
            requests.iter().any(|r| r.contains(call)),
            "{call} not requested: {requests:?}"
        );
    }
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    assert_restores(&w, &reference, "out");

    // Enforcement is real and every permission is needed: take any one away and the backup
    // fails with the API server's Forbidden message, committing nothing.
    let cases = weakened(&objects);
    assert_eq!(
        cases.len(),
        6,
        "pods list, exec, exec get/create, secret, nodes"
    );
    for (what, objects) in cases {
        let w2 = World::new();
        api.enforce_rbac(rbac_of(&objects));
        let denied_before = api.denied().len();
        let out = backup(&w2, &args);
        let denied = api.denied()[denied_before..].to_vec();
        assert!(!denied.is_empty(), "{what}: nothing was refused");
        assert_fails(&w2, &out, &["forbidden", &denied[0]]);
        assert!(
            denied[0].contains("system:serviceaccount:cpvault:cpvault"),
            "{what}: {denied:?}"
        );
    }
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn gke_user_backup_passes_with_the_user_cluster_rbac_and_fails_without_exec() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let api = KubeApi::start();
    // The namespace the shipped template names.
    let ns = "user-cluster-1";
    api.add_pod(ns, "kube-etcd-0", &[("app", "kube-etcd")], &["kube-etcd"]);
    for (from, to) in [
        ("/etcd.local.config/certificates/etcdCA.crt", &certs.ca),
        (
            "/etcd.local.config/certificates/etcd.crt",
            &certs.client_cert,
        ),
        (
            "/etcd.local.config/certificates/etcd.key",
            &certs.client_key,
        ),
    ] {
        api.map_exec(from, to.to_str().unwrap());
    }
    api.map_exec("https://127.0.0.1:2379", &etcd.endpoint);
    let kubeconfig = w.path("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin");
    let args = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--profile",
        "gke-user",
        "--namespace",
        ns,
    ];
    let (objects, rbac) = shipped(&["kubernetes/rbac-user-cluster.yaml"]);
    api.enforce_rbac(rbac);
    let out = backup(&w, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(api.denied(), Vec::<String>::new());
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    assert_restores(&w, &reference, "out");

    // The admin cluster's Role alone grants nothing in the user cluster's namespace.
    let w2 = World::new();
    api.enforce_rbac(shipped(&["kubernetes/rbac.yaml"]).1);
    let out = backup(&w2, &args);
    assert_fails(&w2, &out, &["forbidden", "kube-etcd-0"]);

    for (what, objects) in weakened(&objects) {
        let w3 = World::new();
        api.enforce_rbac(rbac_of(&objects));
        let n = api.denied().len();
        let out = backup(&w3, &args);
        let denied = api.denied()[n..].to_vec();
        assert!(!denied.is_empty(), "{what}: nothing was refused");
        assert_fails(&w3, &out, &["forbidden", &denied[0]]);
    }
}
