//! etcd over gRPC: a plain and a mutual-TLS snapshot restore and record etcd's facts; a wrong
//! CA or a missing client certificate names the flag; etcd down is said to be down, with or
//! without TLS settings.

use super::{assert_fails, assert_grpc_facts, assert_restores, backup, load, manifest};
use crate::support::tls::EtcdCerts;
use crate::support::*;

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn etcd_grpc_plain_snapshot_restores_and_records_etcd_facts() {
    let w = World::new();
    let etcd = Etcd::start();
    load(&etcd);
    let reference = w.backup(&["--etcd-endpoint", &etcd.endpoint]);
    etcd.put("/registry/late", "x");
    let m = manifest(&w, &reference);
    let e = &m["etcd"];
    assert_grpc_facts(&m);
    assert!(m["source"].as_str().unwrap().contains("etcd-grpc:"));
    // One member, the one the snapshot came from.
    assert_eq!(e["members"].as_array().unwrap().len(), 1, "{m:#}");
    assert_eq!(e["members"][0]["id"], e["member_id"], "{m:#}");
    assert_eq!(e["from_member"], "test", "{m:#}");
    assert_restores(&w, &reference, "out");
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn etcd_grpc_with_mutual_tls_restores() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    assert!(etcd.endpoint.starts_with("https://"));
    load(&etcd);
    let reference = w.backup(&[
        "--etcd-endpoint",
        &etcd.endpoint,
        "--etcd-cacert",
        certs.ca.to_str().unwrap(),
        "--etcd-cert",
        certs.client_cert.to_str().unwrap(),
        "--etcd-key",
        certs.client_key.to_str().unwrap(),
    ]);
    etcd.put("/registry/late", "x");
    assert_restores(&w, &reference, "out");
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn etcd_grpc_with_the_wrong_ca_or_no_client_cert_fails_naming_the_flags() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    let wrong_ca = backup(
        &w,
        &[
            "--etcd-endpoint",
            &etcd.endpoint,
            "--etcd-cacert",
            certs.other_ca.to_str().unwrap(),
            "--etcd-cert",
            certs.client_cert.to_str().unwrap(),
            "--etcd-key",
            certs.client_key.to_str().unwrap(),
        ],
    );
    assert_fails(&w, &wrong_ca, &[&etcd.endpoint, "--etcd-cacert"]);
    let no_client = backup(
        &w,
        &[
            "--etcd-endpoint",
            &etcd.endpoint,
            "--etcd-cacert",
            certs.ca.to_str().unwrap(),
        ],
    );
    assert_fails(&w, &no_client, &[&etcd.endpoint, "--etcd-cert"]);
}

#[test]
fn etcd_down_fails_naming_the_endpoint_and_the_fix() {
    let w = World::new();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let out = backup(&w, &["--etcd-endpoint", &endpoint]);
    assert_fails(&w, &out, &[&endpoint, "etcd is running"]);
}

// Regression: with TLS settings, a refused connection was blamed on the certificates
// (every TLS error chain mentions "transport").
#[test]
fn etcd_down_with_tls_settings_still_says_etcd_is_down() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let endpoint = format!("https://127.0.0.1:{}", free_port());
    let out = backup(
        &w,
        &[
            "--etcd-endpoint",
            &endpoint,
            "--etcd-cacert",
            certs.ca.to_str().unwrap(),
            "--etcd-cert",
            certs.client_cert.to_str().unwrap(),
            "--etcd-key",
            certs.client_key.to_str().unwrap(),
        ],
    );
    assert_fails(&w, &out, &[&endpoint, "etcd is running"]);
}
