//! etcd through the SSH connection (`--etcd-via-ssh`) against a real sshd and a real
//! mutual-TLS etcd described by the node's etcd.yaml: the snapshot restores with nothing on
//! the node but a shell, with the server certificate checked for the advertised name; wrong
//! certificates, a name the certificate lacks, nothing listening behind the tunnel and a
//! node without working sudo each fail in one line naming the fix; a distroless etcd pod and
//! a node without etcdctl fall back to the tunnel and say so.

use std::path::{Path, PathBuf};

use super::kube::admin_cluster;
use super::{assert_fails, assert_grpc_facts, assert_restores, backup, load, manifest, KEYS};
use crate::support::sshd::Sshd;
use crate::support::tls::EtcdCerts;
use crate::support::*;

/// The name etcd advertises and its server certificate is issued for; it resolves nowhere,
/// so only a client checking this name against a loopback connection can succeed.
const ADVERTISED: &str = "node1.cpvault.test";

/// A kubeadm-like node: a real etcd serving clients only over mutual TLS, its certificates
/// in a directory of the "node" (kubeadm's names: ca.crt, healthcheck-client.crt/.key), and
/// etcd.yaml in a manifests dir saying what that etcd runs with.
struct TlsNode {
    certs: EtcdCerts,
    etcd: Etcd,
    manifests: PathBuf,
    pki: PathBuf,
}

impl TlsNode {
    fn start(w: &World) -> TlsNode {
        let certs = EtcdCerts::generate_for(&w.path("node/etcd-pki"), &[ADVERTISED]);
        let etcd = Etcd::start_tls(&certs);
        load(&etcd);
        let node = TlsNode {
            certs,
            etcd,
            manifests: w.path("node/manifests"),
            pki: w.path("node/pki"),
        };
        make_pki(&node.pki);
        node.write_manifest(ADVERTISED);
        node
    }

    fn port(&self) -> &str {
        self.etcd.endpoint.rsplit(':').next().unwrap()
    }

    /// etcd.yaml as kubeadm writes it, advertising `host`.
    fn write_manifest(&self, host: &str) {
        let port = self.port();
        let c = &self.certs;
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\nspec:\n  \
             containers:\n  - command:\n    - etcd\n    - --advertise-client-urls=https://{host}:{port}\n    \
             - --cert-file={}\n    - --client-cert-auth=true\n    - --key-file={}\n    \
             - --listen-client-urls=https://127.0.0.1:{port}\n    - --name=node1\n    \
             - --trusted-ca-file={}\n    image: registry.k8s.io/etcd:3.6.0-0\n    name: etcd\n  hostNetwork: true\n",
            c.server_cert.display(),
            c.server_key.display(),
            c.ca.display()
        );
        std::fs::create_dir_all(&self.manifests).unwrap();
        std::fs::write(self.manifests.join("etcd.yaml"), yaml).unwrap();
    }

    fn node_args(&self) -> Vec<String> {
        vec![
            "--ssh-manifests-dir".into(),
            self.manifests.display().to_string(),
            "--ssh-pki-dir".into(),
            self.pki.display().to_string(),
        ]
    }
}

/// A node whose PATH has only `tools` (no etcdctl, no sudo unless given), and an sshd on it.
fn bare_node(w: &World, tools: &[&str]) -> Sshd {
    let bin = w.path("node-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in tools {
        let real = find_on_path(tool).unwrap_or_else(|| panic!("{tool} not on PATH"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    Sshd::start_with(&format!("SetEnv PATH={}", bin.display()))
}

/// What the node needs for the tunnel: a shell to read files with, and tar for the PKI.
const BARE: &[&str] = &["sh", "cat", "wc", "id", "tar"];

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

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every file below `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for p in entries.flatten().map(|e| e.path()) {
        if p.is_dir() {
            found.extend(files_holding(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            found.push(p);
        }
    }
    found
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn etcd_via_ssh_restores_the_keys_with_nothing_on_the_node_but_a_shell() {
    let w = World::new();
    let node = TlsNode::start(&w);
    let sshd = bare_node(&w, BARE);
    assert!(
        !sshd.ssh("command -v etcdctl").status.success(),
        "the node has etcdctl"
    );
    let mut args = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    let ssh = ssh_args(&sshd);
    let node_args = node.node_args();
    args.extend(refs(&ssh));
    args.extend(refs(&node_args));
    args.push("--etcd-via-ssh");
    let store = w.store.display().to_string();
    args.extend(["--store", &store]);
    // A temp dir of its own, to see what cpvault leaves there.
    let tmp = w.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = cpvault_cmd(w.dir.path())
        .env("TMPDIR", &tmp)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    node.etcd.put("/registry/late", "x");
    let m = manifest(&w, &reference);
    let e = &m["etcd"];
    assert_grpc_facts(&m);
    assert_eq!(e["keys"].as_u64(), Some(KEYS as u64), "{m:#}");
    let source = m["source"].as_str().unwrap();
    assert!(
        source.contains(&format!("ssh-etcd-tunnel:{}", sshd.destination())),
        "{source}"
    );
    assert_restores(&w, &reference, "out");
    // Nothing left in the temp dir, and no key material in anything that is.
    let key = std::fs::read(&node.certs.client_key).unwrap();
    let body = &key[40..key.len() - 40];
    assert!(files_holding(&tmp, body).is_empty());
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn wrong_certificates_through_the_tunnel_fail_naming_the_setting() {
    let w = World::new();
    let node = TlsNode::start(&w);
    let sshd = Sshd::start();
    let mut args = ssh_args(&sshd);
    args.extend(node.node_args());
    args.push("--etcd-via-ssh".into());
    let mut wrong_ca = args.clone();
    wrong_ca.extend([
        "--node-etcd-cacert".into(),
        node.certs.other_ca.display().to_string(),
    ]);
    let out = backup(&w, &refs(&wrong_ca));
    assert_fails(&w, &out, &["through SSH", "--node-etcd-cacert"]);
    // A client certificate etcd does not accept: the server's own, issued for serving.
    let mut wrong_client = args.clone();
    wrong_client.extend([
        "--node-etcd-cert".into(),
        node.certs.server_cert.display().to_string(),
        "--node-etcd-key".into(),
        node.certs.server_key.display().to_string(),
    ]);
    let out = backup(&w, &refs(&wrong_client));
    assert_fails(&w, &out, &["through SSH", "--node-etcd-cert"]);
    // A missing key file on the node names the path and the setting.
    let mut no_key = args;
    no_key.extend(["--node-etcd-key".into(), "/nonexistent/etcd.key".into()]);
    let out = backup(&w, &refs(&no_key));
    assert_fails(&w, &out, &["/nonexistent/etcd.key", "--node-etcd-key"]);
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_server_certificate_not_issued_for_the_advertised_name_is_refused() {
    let w = World::new();
    let node = TlsNode::start(&w);
    node.write_manifest("elsewhere.cpvault.test");
    let sshd = Sshd::start();
    let mut args = ssh_args(&sshd);
    args.extend(node.node_args());
    args.push("--etcd-via-ssh".into());
    let out = backup(&w, &refs(&args));
    assert_fails(
        &w,
        &out,
        &["elsewhere.cpvault.test", "--advertise-client-urls"],
    );
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn nothing_listening_behind_the_tunnel_fails_naming_the_endpoint_setting() {
    let w = World::new();
    let node = TlsNode::start(&w);
    let sshd = Sshd::start();
    let endpoint = format!("https://127.0.0.1:{}", free_port());
    let mut args = ssh_args(&sshd);
    args.extend(node.node_args());
    args.extend([
        "--etcd-via-ssh".into(),
        "--node-etcd-endpoint".into(),
        endpoint.clone(),
    ]);
    let out = backup(&w, &refs(&args));
    assert_fails(
        &w,
        &out,
        &[&endpoint, "nothing answered", "--node-etcd-endpoint"],
    );
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_node_without_working_sudo_fails_naming_sudo_and_the_fix() {
    let w = World::new();
    let node = TlsNode::start(&w);
    // sudo that asks for a password, as for a user without NOPASSWD.
    let sudo = w.path("fake-sudo");
    std::fs::write(
        &sudo,
        "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&sudo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sshd = bare_node(&w, BARE);
    std::os::unix::fs::symlink(&sudo, w.path("node-bin/sudo")).unwrap();
    let mut args = ssh_args(&sshd);
    args.extend(node.node_args());
    args.extend([
        "--etcd-via-ssh".into(),
        "--ssh-sudo".into(),
        "always".into(),
    ]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["without a password", "NOPASSWD"]);
    std::fs::remove_file(w.path("node-bin/sudo")).unwrap();
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["sudo is not installed", "log in as root"]);
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn ssh_etcd_on_a_node_without_etcdctl_falls_back_to_the_tunnel_and_says_so() {
    let w = World::new();
    let node = TlsNode::start(&w);
    let sshd = bare_node(&w, &["sh", "cat", "wc", "id", "tar", "mktemp", "rm"]);
    let mut args = ssh_args(&sshd);
    args.extend(node.node_args());
    args.push("--ssh-etcd".into());
    let out = backup(&w, &refs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("has no etcdctl") && err.contains("through the SSH connection"),
        "{err}"
    );
    let reference = stdout(&out).trim().to_string();
    node.etcd.put("/registry/late", "x");
    assert_restores(&w, &reference, "out");
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_distroless_etcd_pod_makes_gke_admin_fall_back_to_the_tunnel_and_say_so() {
    let w = World::new();
    let node = TlsNode::start(&w);
    let sshd = bare_node(&w, BARE);
    let (api, kubeconfig) = admin_cluster(&w, &node.etcd, &node.certs);
    api.make_distroless("kube-system", "etcd-admin-cp-1");
    let key = std::fs::read(sshd.client_key()).unwrap();
    api.add_secret("kube-system", "sshkeys", &[("vsphere_tmp", &key)]);
    let mut args: Vec<String> = [
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--profile",
        "gke-admin",
        "--ssh-user",
        &sshd.user(),
        "--ssh-port",
        &sshd.port().to_string(),
        "--ssh-known-hosts",
        sshd.known_hosts().to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(node.node_args());
    let out = backup(&w, &refs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("etcd-admin-cp-1 has no sh") && err.contains("through the SSH connection"),
        "{err}"
    );
    assert!(
        api.execs().iter().any(|e| e.command[0] == "sh"),
        "exec was not tried first"
    );
    let reference = stdout(&out).trim().to_string();
    node.etcd.put("/registry/late", "x");
    assert!(manifest(&w, &reference)["source"]
        .as_str()
        .unwrap()
        .contains("ssh-etcd-tunnel:"));
    let out = assert_restores(&w, &reference, "out");
    assert_eq!(tree(&out.join("pki")), tree(&node.pki));
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_distroless_etcd_pod_without_a_reachable_node_names_the_flags_that_would_work() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    let (api, kubeconfig) = admin_cluster(&w, &etcd, &certs);
    api.make_distroless("kube-system", "etcd-admin-cp-1");
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
        &[
            "has no sh",
            "--ssh USER@HOST",
            "--ssh-key",
            "--etcd-endpoint",
        ],
    );
}
