//! etcd through the Kubernetes API alone (`--etcd-via-portforward`): the test API server's
//! port-forward carries gRPC to a real mutual-TLS etcd whose distroless pod says in its
//! command where it listens and which name it advertises. The snapshot restores with no
//! exec and no node reached, the certificate checked for the advertised name, for kubeadm,
//! gke-admin and a GKE user cluster's `kube-etcd-0` (a `sh -c` command, two containers).
//! Missing certificate flags, wrong certificates, RBAC without pods/portforward and a pod
//! port nothing listens on each fail in one line naming the cause and the fix, committing
//! nothing.

use std::path::PathBuf;

use serde_json::json;

use super::kube::admin_cluster;
use super::{assert_fails, assert_grpc_facts, assert_restores, backup, load, manifest, KEYS};
use crate::support::kubeapi::rbac::Rbac;
use crate::support::kubeapi::KubeApi;
use crate::support::tls::EtcdCerts;
use crate::support::*;

/// The name etcd advertises and its server certificate is issued for; it resolves nowhere,
/// so only a client checking this name over the forward can succeed.
const ADVERTISED: &str = "node1.cpvault.test";
const POD: &str = "etcd-admin-cp-1";

/// A kubeadm cluster whose etcd pod is distroless and forwards to a real mutual-TLS etcd.
struct Cluster {
    certs: EtcdCerts,
    etcd: Etcd,
    api: KubeApi,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start(w: &World) -> Cluster {
        let certs = EtcdCerts::generate_for(&w.path("certs"), &[ADVERTISED]);
        let etcd = Etcd::start_tls(&certs);
        load(&etcd);
        let (api, kubeconfig) = admin_cluster(w, &etcd, &certs);
        api.make_distroless("kube-system", POD);
        let c = Cluster {
            certs,
            etcd,
            api,
            kubeconfig,
        };
        c.set_listen(c.port());
        c
    }

    fn port(&self) -> u16 {
        self.etcd
            .endpoint
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The etcd container's command as kubeadm writes it, listening on `port` on loopback.
    fn set_listen(&self, port: u16) {
        let advertise = format!("--advertise-client-urls=https://{ADVERTISED}:{port}");
        let listen =
            format!("--listen-client-urls=https://127.0.0.1:{port},https://10.255.255.1:{port}");
        self.api.set_command(
            "kube-system",
            POD,
            "etcd",
            &[
                "etcd",
                &advertise,
                "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
                "--client-cert-auth=true",
                &listen,
                "--name=admin-cp-1",
                "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            ],
        );
    }

    /// The flags of a port-forward backup with `profile` and the right certificates.
    fn args(&self, profile: &str) -> Vec<String> {
        let c = &self.certs;
        [
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--profile",
            profile,
            "--etcd-via-portforward",
            "--etcd-cacert",
            c.ca.to_str().unwrap(),
            "--etcd-cert",
            c.client_cert.to_str().unwrap(),
            "--etcd-key",
            c.client_key.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// `args` with the value of `flag` replaced.
fn with(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    let i = out.iter().position(|a| a == flag).unwrap();
    out[i + 1] = value.to_string();
    out
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn etcd_via_portforward_restores_the_keys_through_the_api_alone() {
    let w = World::new();
    let c = Cluster::start(&w);
    // A temp dir of its own, to see that cpvault leaves nothing there.
    let tmp = w.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let store = w.store.display().to_string();
    let mut args = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    args.extend(["--store", &store]);
    let pf = c.args("kubeadm");
    args.extend(refs(&pf));
    let out = cpvault_cmd(w.dir.path())
        .env("TMPDIR", &tmp)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    c.etcd.put("/registry/late", "x");
    let m = manifest(&w, &reference);
    let e = &m["etcd"];
    assert_grpc_facts(&m);
    assert_eq!(e["keys"].as_u64(), Some(KEYS as u64), "{m:#}");
    let source = m["source"].as_str().unwrap();
    assert!(
        source.contains(&format!("kube-portforward:kube-system/{POD}:{}", c.port())),
        "{source}"
    );
    // The port the pod's command names, over the kubelet's protocol; nothing exec'd.
    let forwards = c.api.forwards();
    assert!(!forwards.is_empty());
    for f in &forwards {
        assert_eq!((f.pod.as_str(), f.ports.as_slice()), (POD, &[c.port()][..]));
        assert_eq!(f.protocol.as_deref(), Some("v4.channel.k8s.io"));
    }
    assert!(c.api.execs().is_empty(), "{:?}", c.api.execs());
    assert_restores(&w, &reference, "out");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");

    // gke-admin through the API alone: no node and no SSH key is looked for.
    let before = c.api.requests().len();
    let out = backup(&w, &refs(&c.args("gke-admin")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no PKI"), "{}", stderr(&out));
    let asked = c.api.requests()[before..].to_vec();
    assert!(
        asked
            .iter()
            .all(|r| !r.contains("/secrets") && !r.contains("/nodes")),
        "{asked:?}"
    );
}

#[test]
fn missing_certificate_flags_are_a_usage_error_naming_them() {
    let w = World::new();
    let kubeconfig = w.path("admin.kubeconfig");
    let out = backup(
        &w,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--profile",
            "kubeadm",
            "--etcd-via-portforward",
            "--etcd-cacert",
            "ca.crt",
        ],
    );
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(
        line.contains("--etcd-via-portforward needs --etcd-cert, --etcd-key")
            && line.contains("healthcheck-client"),
        "{line}"
    );
    assert!(!w.store.exists() || std::fs::read_dir(&w.store).unwrap().next().is_none());
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn wrong_certificates_through_the_portforward_fail_naming_the_flag() {
    let w = World::new();
    let c = Cluster::start(&w);
    let args = c.args("kubeadm");
    let certs = &c.certs;
    let out = backup(
        &w,
        &refs(&with(
            &args,
            "--etcd-cacert",
            certs.other_ca.to_str().unwrap(),
        )),
    );
    assert_fails(&w, &out, &["port-forward", "--etcd-cacert"]);
    // A client certificate etcd does not accept: the server's own, issued for serving.
    let wrong_client = with(&args, "--etcd-cert", certs.server_cert.to_str().unwrap());
    let wrong_client = with(
        &wrong_client,
        "--etcd-key",
        certs.server_key.to_str().unwrap(),
    );
    let out = backup(&w, &refs(&wrong_client));
    assert_fails(&w, &out, &["port-forward", "--etcd-cert"]);
    // A name the server certificate does not list.
    let mut wrong_name = args.clone();
    wrong_name.extend(["--etcd-server-name".into(), "elsewhere.cpvault.test".into()]);
    let out = backup(&w, &refs(&wrong_name));
    assert_fails(&w, &out, &["elsewhere.cpvault.test", "--etcd-server-name"]);
    // A key file that is not there names the path and the flag.
    let out = backup(
        &w,
        &refs(&with(&args, "--etcd-key", "/nonexistent/etcd.key")),
    );
    assert_fails(&w, &out, &["/nonexistent/etcd.key", "--etcd-key"]);
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn rbac_without_pods_portforward_names_the_resource_and_verbs() {
    let w = World::new();
    let c = Cluster::start(&w);
    let role = |verbs: &[&str]| {
        let mut rules = vec![json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})];
        if !verbs.is_empty() {
            rules.push(
                json!({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs}),
            );
        }
        vec![
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "backup", "namespace": "kube-system"}, "rules": rules}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "backup", "namespace": "kube-system"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "backup"},
                "subjects": [{"kind": "ServiceAccount", "name": "backup", "namespace": "ops"}]}),
        ]
    };
    let args = c.args("kubeadm");
    c.api
        .enforce_rbac(Rbac::for_service_account("ops", "backup", &role(&[])));
    let out = backup(&w, &refs(&args));
    assert_fails(
        &w,
        &out,
        &[
            "forbidden",
            "cannot get resource \"pods/portforward\"",
            "get and create pods/portforward in namespace kube-system",
        ],
    );
    // get alone is not enough for a websocket port-forward.
    c.api
        .enforce_rbac(Rbac::for_service_account("ops", "backup", &role(&["get"])));
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["cannot create resource \"pods/portforward\""]);
    // The rule the message names is all it takes.
    c.api.enforce_rbac(Rbac::for_service_account(
        "ops",
        "backup",
        &role(&["get", "create"]),
    ));
    let out = backup(&w, &refs(&args));
    assert!(out.status.success(), "{}", stderr(&out));
    c.etcd.put("/registry/late", "x");
    assert_restores(&w, stdout(&out).trim(), "out");
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_pod_port_nothing_listens_on_fails_naming_the_port_and_the_fix() {
    let w = World::new();
    let c = Cluster::start(&w);
    let args = c.args("kubeadm");
    // The pod says etcd listens where nothing does.
    let nowhere = free_port();
    c.set_listen(nowhere);
    let out = backup(&w, &refs(&args));
    assert_fails(
        &w,
        &out,
        &[
            &format!("could not connect to port {nowhere} in the pod"),
            "connection refused",
            "--etcd-pod-port",
        ],
    );
    // And --etcd-pod-port overrides it: the real port works, another free one fails alike.
    let mut right = args.clone();
    right.extend(["--etcd-pod-port".into(), c.port().to_string()]);
    let out = backup(&w, &refs(&right));
    assert!(out.status.success(), "{}", stderr(&out));
    let other = free_port();
    let mut wrong = args;
    wrong.extend(["--etcd-pod-port".into(), other.to_string()]);
    let w2 = World::new();
    let out = backup(&w2, &refs(&wrong));
    assert_fails(&w2, &out, &[&format!("port {other}"), "--etcd-pod-port"]);
}

#[test]
#[ignore = "needs etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_distroless_user_cluster_etcd_is_reached_through_the_admin_clusters_api() {
    let w = World::new();
    let certs = EtcdCerts::generate(&w.path("certs"));
    let etcd = Etcd::start_tls(&certs);
    load(&etcd);
    let port = etcd.endpoint.rsplit(':').next().unwrap().to_string();
    let api = KubeApi::start();
    api.add_pod(
        "user1",
        "kube-etcd-0",
        &[("app", "kube-etcd")],
        &["etcd-defrag", "kube-etcd"],
    );
    api.make_distroless("user1", "kube-etcd-0");
    // A script, a wildcard listen address and nothing advertised: the port from the script,
    // the name localhost (which the certificate lists).
    let script = format!("exec etcd --name=kube-etcd-0 --listen-client-urls=https://0.0.0.0:{port} --client-cert-auth=true");
    api.set_command(
        "user1",
        "kube-etcd-0",
        "kube-etcd",
        &["/bin/sh", "-c", &script],
    );
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
            "--etcd-via-portforward",
            "--etcd-cacert",
            certs.ca.to_str().unwrap(),
            "--etcd-cert",
            certs.client_cert.to_str().unwrap(),
            "--etcd-key",
            certs.client_key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    etcd.put("/registry/late", "x");
    let forwards = api.forwards();
    assert!(forwards
        .iter()
        .all(|f| f.namespace == "user1" && f.pod == "kube-etcd-0"));
    assert!(manifest(&w, &reference)["source"]
        .as_str()
        .unwrap()
        .contains("kube-portforward:user1/kube-etcd-0"));
    assert_restores(&w, &reference, "out");
}
