//! The node-local CronJob variant (`deploy/kubernetes/node-local/cpvault.yaml`): pinned to a
//! control-plane node, on the host network, the host's PKI mounted read-only at the paths its
//! config names, no API token, no capability; and that config, with only the host paths and
//! the endpoint pointed at this machine's, backs up a real mutual-TLS etcd whose snapshot
//! restores, with the PKI.

use serde_json::{json, Value};

use super::manifests;
use crate::sources::{assert_restores, load};
use crate::support::tls::EtcdCerts;
use crate::support::*;

const FILE: &str = "kubernetes/node-local/cpvault.yaml";
/// Where the host's PKI is mounted in the pod (and where it is on the node).
const PKI: &str = "/etc/kubernetes/pki";

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {FILE}"))
}

#[test]
fn the_node_local_cronjob_is_pinned_host_networked_read_only_and_without_capabilities() {
    let objects = manifests(FILE);
    let ns = object(&objects, "Namespace");
    let cj = object(&objects, "CronJob");
    let cm = object(&objects, "ConfigMap");
    let sa = object(&objects, "ServiceAccount");
    for o in [cj, cm, sa] {
        assert_eq!(o["metadata"]["namespace"], ns["metadata"]["name"]);
    }
    // Its own namespace: the main one enforces "restricted", which this pod cannot meet.
    assert_ne!(ns["metadata"]["name"], "cpvault");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(
        pod["nodeSelector"],
        json!({"node-role.kubernetes.io/control-plane": ""})
    );
    assert!(pod["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "node-role.kubernetes.io/control-plane"));
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let c = &pod["containers"][0];
    assert_eq!(
        c["args"],
        json!(["run", "--config", "/etc/cpvault/config.toml"])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    // Every host path is mounted read-only, and the PKI at the path the config names.
    let volumes = pod["volumes"].as_array().unwrap();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let host: Vec<&Value> = volumes
        .iter()
        .filter(|v| v["hostPath"].is_object())
        .collect();
    assert_eq!(host.len(), 1, "{host:?}");
    assert_eq!(host[0]["hostPath"]["path"], PKI);
    let mount = mounts
        .iter()
        .find(|m| m["name"] == host[0]["name"])
        .unwrap();
    assert_eq!(
        (&mount["mountPath"], &mount["readOnly"]),
        (&json!(PKI), &json!(true))
    );
    let config = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(config["configMap"]["name"], cm["metadata"]["name"]);
    let toml_text = cm["data"]["config.toml"].as_str().unwrap();
    let parsed: toml::Value = toml::from_str(toml_text).unwrap();
    let admin = &parsed["clusters"]["admin"];
    assert_eq!(
        admin["etcd_endpoints"].as_array().unwrap()[0].as_str(),
        Some("https://127.0.0.1:2379")
    );
    for key in ["etcd_cacert", "etcd_cert", "etcd_key", "pki_dir"] {
        assert!(
            admin[key].as_str().unwrap().starts_with(PKI),
            "{key} is not under the mounted {PKI}"
        );
    }
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn the_node_local_config_backs_up_a_local_mutual_tls_etcd_with_the_certs_at_the_mounted_paths() {
    let w = World::new();
    // The node's PKI as kubeadm lays it out, etcd's real certificates in pki/etcd.
    let pki = w.path("host/etc/kubernetes/pki");
    make_pki(&pki);
    let certs = EtcdCerts::generate(&pki.join("etcd"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let cm = object(&manifests(FILE), "ConfigMap").clone();
    // Only what differs between the pod and this machine: the host path, the endpoint's
    // port, and no Pushgateway to push to.
    let config: String = cm["data"]["config.toml"]
        .as_str()
        .unwrap()
        .replace(PKI, pki.to_str().unwrap())
        .replace("https://127.0.0.1:2379", &etcd.endpoint)
        .lines()
        .filter(|l| !l.starts_with("pushgateway"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config_file = w.path("config.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = w.run(&[
        "--config",
        config_file.to_str().unwrap(),
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    let extracted = assert_restores(&w, &reference, "out");
    assert_eq!(tree(&extracted.join("pki")), tree(&pki));
}
