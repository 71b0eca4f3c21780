//! Backup sources against real servers: etcd over gRPC (plain and mutual TLS), a real sshd
//! (PKI with `tar`, etcdctl on the "node"), and the Kubernetes test API server whose exec
//! runs etcdctl for real against the test etcd. Every success case restores the extracted
//! snapshot with `etcdctl snapshot restore`, starts etcd on it, and reads the keys back;
//! every failure case checks the one-line message and that nothing was committed.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::kubeapi::KubeApi;
use crate::support::sshd::Sshd;
use crate::support::tls::EtcdCerts;
use crate::support::*;

const KEYS: usize = 40;

/// Puts the keys every restore must bring back.
fn load(etcd: &Etcd) {
    for i in 0..KEYS {
        etcd.put(
            &format!("/registry/configmaps/kube-system/cm-{i:03}"),
            &format!("value-{i}"),
        );
    }
}

/// Extracts `reference`, restores its snapshot with etcdctl, starts etcd on it, and checks
/// that exactly the keys put before the backup are there.
fn assert_restores(w: &World, reference: &str, to: &str) -> std::path::PathBuf {
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

fn manifest(w: &World, reference: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.manifest(reference)).unwrap()).unwrap()
}

fn backup(w: &World, args: &[&str]) -> Output {
    let mut full = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    full.extend_from_slice(args);
    w.run(&full)
}

/// Asserts a failed backup: exit 1, a one-line error containing every `needle`, no panic,
/// nothing listed.
fn assert_fails(w: &World, out: &Output, needles: &[&str]) {
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

// ---- etcd over gRPC ----

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
    assert_eq!(e["hash_trailer"], true, "{m:#}");
    assert!(e["revision"].as_i64().unwrap() >= KEYS as i64, "{m:#}");
    for field in ["cluster_id", "member_id", "version"] {
        assert!(
            e[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {m:#}"
        );
    }
    assert!(m["source"].as_str().unwrap().contains("etcd-grpc:"));
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

// ---- SSH ----

fn ssh_args(sshd: &Sshd) -> Vec<String> {
    vec![
        "--ssh".into(),
        sshd.destination(),
        "--ssh-port".into(),
        sshd.port().to_string(),
        "--ssh-key".into(),
        sshd.client_key().display().to_string(),
        "--ssh-known-hosts".into(),
        sshd.known_hosts().display().to_string(),
    ]
}

/// SSH flags for PKI from `node_pki` and a snapshot by `etcdctl` on the node, talking to
/// the plain-http test etcd (so no certificate flags).
fn ssh_etcd_args(sshd: &Sshd, etcdctl: &Path, node_pki: &Path, etcd: &Etcd) -> Vec<String> {
    let mut args = ssh_args(sshd);
    args.extend(
        [
            "--ssh-etcd",
            "--node-etcdctl",
            etcdctl.to_str().unwrap(),
            "--ssh-pki-dir",
            node_pki.to_str().unwrap(),
            "--node-etcd-endpoint",
            &etcd.endpoint,
            "--node-etcd-cacert",
            "",
            "--node-etcd-cert",
            "",
            "--node-etcd-key",
            "",
        ]
        .map(String::from),
    );
    args
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// An etcdctl wrapper for the "node" that records where it saved the snapshot, so a test
/// can check that the temp dir is gone afterwards (other tests run at the same time, so
/// /tmp itself cannot be compared).
fn recording_etcdctl(w: &World) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = w.path("recording-etcdctl");
    let record = w.path("saved-at");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor last; do :; done\necho \"$last\" >> '{}'\nexec etcdctl \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, record)
}

/// Asserts the snapshot was saved (into a private temp dir) and the dir is gone.
fn assert_temp_dir_removed(record: &Path) {
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

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn ssh_pki_comes_back_identical_and_the_node_is_unchanged() {
    let w = World::new();
    let sshd = Sshd::start();
    let node_pki = w.path("node/etc/kubernetes/pki");
    make_pki(&node_pki);
    let before = tree(&node_pki);
    let mut args = ssh_args(&sshd);
    args.extend(["--ssh-pki-dir".into(), node_pki.display().to_string()]);
    let reference = w.backup(&refs(&args));
    assert_eq!(tree(&node_pki), before, "the node's PKI changed");
    let out = w.extract(&reference, "out");
    assert_eq!(tree(&out.join("pki")), before);
    assert!(manifest(&w, &reference)["source"]
        .as_str()
        .unwrap()
        .contains("ssh-pki:"));
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn ssh_etcdctl_snapshot_restores_and_leaves_no_temp_dir_on_the_node() {
    let w = World::new();
    let sshd = Sshd::start();
    let etcd = Etcd::start();
    load(&etcd);
    let node_pki = w.path("node/pki");
    make_pki(&node_pki);
    let (etcdctl, record) = recording_etcdctl(&w);
    let args = ssh_etcd_args(&sshd, &etcdctl, &node_pki, &etcd);
    let reference = w.backup(&refs(&args));
    etcd.put("/registry/late", "x");
    assert_temp_dir_removed(&record);
    let out = assert_restores(&w, &reference, "out");
    assert_eq!(tree(&out.join("pki")), tree(&node_pki));
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_snapshot_with_a_bad_trailer_from_the_node_fails_the_backup_and_commits_nothing() {
    let w = World::new();
    let sshd = Sshd::start();
    let etcd = Etcd::start();
    load(&etcd);
    // An etcdctl on the "node" whose saved file has one byte flipped: the stream's own
    // sha256 trailer no longer matches.
    let fake = w.path("corrupting-etcdctl");
    std::fs::write(
        &fake,
        "#!/bin/sh\nset -e\netcdctl \"$@\"\nfor last; do :; done\nprintf 'X' | dd of=\"$last\" bs=1 seek=5000 conv=notrunc status=none\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let node_pki = w.path("node/pki");
    make_pki(&node_pki);
    let args = ssh_etcd_args(&sshd, &fake, &node_pki, &etcd);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["trailer does not match"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn an_unknown_host_key_is_refused_and_accept_new_trusts_it_once() {
    let w = World::new();
    let sshd = Sshd::start();
    make_pki(&w.path("pki-on-node"));
    let kh = sshd.empty_known_hosts();
    let mut args = ssh_args(&sshd);
    let i = args.iter().position(|a| a == "--ssh-known-hosts").unwrap();
    args[i + 1] = kh.display().to_string();
    args.extend([
        "--ssh-pki-dir".into(),
        w.path("pki-on-node").display().to_string(),
    ]);
    let out = backup(&w, &refs(&args));
    let name = format!("[127.0.0.1]:{}", sshd.port());
    assert_fails(&w, &out, &[&name, "not in", "--ssh-accept-new"]);

    args.push("--ssh-accept-new".into());
    let ok = backup(&w, &refs(&args));
    assert!(ok.status.success(), "{}", stderr(&ok));
    // ssh may hash the host name (HashKnownHosts), so look for the key itself.
    let recorded = std::fs::read_to_string(&kh).unwrap();
    let host_key = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    let host_key = host_key.split_whitespace().nth(2).unwrap();
    assert!(recorded.contains(host_key), "key not recorded: {recorded}");
    // Trusted from now on without the flag.
    args.pop();
    let again = backup(&w, &refs(&args));
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn a_changed_host_key_is_refused_even_with_accept_new() {
    let w = World::new();
    let sshd = Sshd::start();
    make_pki(&w.path("pki-on-node"));
    let mut args = ssh_args(&sshd);
    let i = args.iter().position(|a| a == "--ssh-known-hosts").unwrap();
    args[i + 1] = sshd.wrong_known_hosts().display().to_string();
    args.extend([
        "--ssh-pki-dir".into(),
        w.path("pki-on-node").display().to_string(),
        "--ssh-accept-new".into(),
    ]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["CHANGED", "ssh-keygen -R"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn an_ssh_key_the_node_does_not_know_fails_naming_ssh_key() {
    let w = World::new();
    let sshd = Sshd::start();
    let other = w.path("other_key");
    let o = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut args = ssh_args(&sshd);
    let i = args.iter().position(|a| a == "--ssh-key").unwrap();
    args[i + 1] = other.display().to_string();
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["authentication failed", "--ssh-key"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn a_missing_pki_dir_on_the_node_fails_naming_the_dir() {
    let w = World::new();
    let sshd = Sshd::start();
    let mut args = ssh_args(&sshd);
    args.extend(["--ssh-pki-dir".into(), "/nonexistent/pki".into()]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["/nonexistent/pki", "--ssh-pki-dir"]);
}

// ---- Kubernetes exec ----

/// An API server with a kubeadm/gke-admin layout: a control-plane node, the etcd static pod,
/// and exec paths mapped onto the test etcd's certificates and endpoint.
fn admin_cluster(w: &World, etcd: &Etcd, certs: &EtcdCerts) -> (KubeApi, std::path::PathBuf) {
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

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn a_node_without_sudo_fails_naming_sudo_and_the_fix() {
    let w = World::new();
    // A node whose PATH has a shell and tar but no sudo.
    let bin = w.path("node-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "tar", "cat", "id"] {
        let real = which(tool);
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let sshd = Sshd::start_with(&format!("SetEnv PATH={}", bin.display()));
    make_pki(&w.path("pki-on-node"));
    let mut args = ssh_args(&sshd);
    args.extend([
        "--ssh-pki-dir".into(),
        w.path("pki-on-node").display().to_string(),
        "--ssh-sudo".into(),
        "always".into(),
    ]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["sudo is not installed", "log in as root"]);
}

fn which(tool: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not on PATH"))
}

// ---- clusters from the config file ----

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn backup_all_runs_every_configured_cluster_and_reports_the_failed_one() {
    let w = World::new();
    let etcd = Etcd::start();
    load(&etcd);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = w.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\nrecipients = [\"{}\"]\n\
             [clusters.good]\netcd_endpoints = [\"{}\"]\n\
             [clusters.good.retention]\nkeep_last = 3\n\
             [clusters.gone]\netcd_endpoints = [\"{dead}\"]\n",
            w.store.display(),
            w.recipient,
            etcd.endpoint
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let all = cpvault_in(w.dir.path(), &["--config", cfg, "backup", "--all"]);
    assert_no_panic(&all);
    assert_eq!(all.status.code(), Some(1), "{}", stderr(&all));
    let table = stdout(&all);
    let good = table.lines().find(|l| l.starts_with("good")).expect(&table);
    let gone = table.lines().find(|l| l.starts_with("gone")).expect(&table);
    assert!(good.contains(" ok ") && good.contains("good/"), "{table}");
    assert!(gone.contains("FAILED") && gone.contains(&dead), "{table}");
    assert!(
        stderr(&all).contains("1 of 2 cluster backups failed"),
        "{}",
        stderr(&all)
    );
    let list = cpvault_in(w.dir.path(), &["--config", cfg, "list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let clusters: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cluster"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clusters, ["good"]);

    // One cluster by name takes its section's sources.
    let one = cpvault_in(
        w.dir.path(),
        &["--config", cfg, "backup", "--cluster", "good"],
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let reference = stdout(&one).trim().to_string();
    etcd.put("/registry/late", "x");
    assert_restores(&w, &reference, "out");
}

#[test]
fn a_typo_in_a_cluster_section_is_refused() {
    let w = World::new();
    let config = w.path("config.toml");
    std::fs::write(&config, "[clusters.admin]\nkubeconfg = \"/x\"\n").unwrap();
    let out = cpvault_in(
        w.dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "backup",
            "--cluster",
            "admin",
        ],
    );
    assert_no_panic(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("kubeconfg"), "{}", stderr(&out));
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

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn ctrl_c_while_the_node_saves_the_snapshot_removes_it_and_commits_nothing() {
    let w = World::new();
    let sshd = Sshd::start();
    let etcd = Etcd::start();
    load(&etcd);
    let node_pki = w.path("node/pki");
    make_pki(&node_pki);
    // An etcdctl that records where it saves, then takes its time.
    let (recording, record) = recording_etcdctl(&w);
    let slow = w.path("slow-etcdctl");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\n'{}' \"$@\" || exit 1\nsleep 3\n",
            recording.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = ssh_etcd_args(&sshd, &slow, &node_pki, &etcd);
    let mut full = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    full.extend(refs(&args));
    let store = w.store.display().to_string();
    full.extend(["--store", &store]);
    let child = cpvault_cmd(w.dir.path())
        .args(&full)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once etcdctl has saved, interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !record.exists() {
        assert!(std::time::Instant::now() < deadline, "etcdctl never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(o.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_temp_dir_removed(&record);
    let list = w.run(&["list", "--output", "json"]);
    assert_eq!(stdout(&list).trim(), "[]");
}
