use super::*;

fn s() -> Sources {
    Sources::default()
}

#[test]
fn nothing_given_is_a_usage_error_naming_the_sources() {
    let e = plan(&s()).unwrap_err().0;
    assert!(e.contains("--etcd-endpoint") && e.contains("--ssh"), "{e}");
}

#[test]
fn two_etcd_sources_are_refused() {
    let mut x = s();
    x.etcd_snapshot_file = Some("a".into());
    x.etcd_endpoints = vec!["http://127.0.0.1:2379".into()];
    let e = plan(&x).unwrap_err().0;
    assert!(
        e.contains("--etcd-snapshot-file and --etcd-endpoint"),
        "{e}"
    );
}

#[test]
fn gke_admin_alone_means_exec_plus_discovered_node() {
    let mut x = s();
    x.kubeconfig = Some("k".into());
    x.profile = Some(Profile::GkeAdmin);
    let p = plan(&x).unwrap();
    assert_eq!(p.etcd, EtcdFrom::KubeExec);
    assert_eq!(p.pki, PkiFrom::DiscoveredNode);
    assert!(p.warning.is_none());
}

#[test]
fn kubeadm_without_a_key_warns_that_pki_is_missing() {
    let mut x = s();
    x.kubeconfig = Some("k".into());
    x.profile = Some(Profile::Kubeadm);
    let p = plan(&x).unwrap();
    assert_eq!(p.pki, PkiFrom::None);
    assert!(p.warning.unwrap().contains("no PKI"));
}

#[test]
fn kubeconfig_needs_a_profile_and_gke_user_a_namespace() {
    let mut x = s();
    x.kubeconfig = Some("k".into());
    assert!(plan(&x).unwrap_err().0.contains("--profile"));
    x.profile = Some(Profile::GkeUser);
    assert!(plan(&x).unwrap_err().0.contains("--namespace"));
    x.namespace = Some("user1".into());
    let p = plan(&x).unwrap();
    assert_eq!((p.etcd, p.pki), (EtcdFrom::KubeExec, PkiFrom::None));
}

#[test]
fn ssh_gives_pki_and_with_ssh_etcd_the_snapshot() {
    let mut x = s();
    x.ssh = Some("root@node".into());
    assert_eq!(plan(&x).unwrap().pki, PkiFrom::Ssh);
    assert_eq!(plan(&x).unwrap().etcd, EtcdFrom::None);
    x.ssh_etcd = Some(true);
    assert_eq!(plan(&x).unwrap().etcd, EtcdFrom::Ssh);
    x.ssh = None;
    assert!(plan(&x).unwrap_err().0.contains("--ssh-etcd needs --ssh"));
}

#[test]
fn etcd_via_ssh_needs_a_node_and_with_a_kubeconfig_replaces_the_exec() {
    let mut x = s();
    x.etcd_via_ssh = Some(true);
    assert!(plan(&x)
        .unwrap_err()
        .0
        .contains("--etcd-via-ssh needs the node"));
    x.ssh = Some("root@node".into());
    assert_eq!(plan(&x).unwrap().etcd, EtcdFrom::SshTunnel);
    x.ssh_etcd = Some(true);
    assert!(plan(&x)
        .unwrap_err()
        .0
        .contains("--ssh-etcd and --etcd-via-ssh"));
    let mut k = s();
    k.etcd_via_ssh = Some(true);
    k.kubeconfig = Some("k".into());
    k.profile = Some(Profile::GkeAdmin);
    let p = plan(&k).unwrap();
    assert_eq!(
        (p.etcd, p.pki),
        (EtcdFrom::SshTunnel, PkiFrom::DiscoveredNode)
    );
    k.profile = Some(Profile::Kubeadm);
    assert!(plan(&k).unwrap_err().0.contains("--ssh-key"));
    k.profile = Some(Profile::GkeUser);
    k.namespace = Some("u".into());
    assert!(plan(&k).unwrap_err().0.contains("gke-user"));
}

#[test]
fn etcd_via_portforward_needs_a_kubeconfig_and_every_certificate_and_reaches_no_node() {
    let mut x = s();
    x.etcd_via_portforward = Some(true);
    assert!(plan(&x).unwrap_err().0.contains("needs --kubeconfig"));
    x.kubeconfig = Some("k".into());
    x.profile = Some(Profile::GkeAdmin);
    x.etcd_cacert = Some("ca".into());
    let e = plan(&x).unwrap_err().0;
    assert!(
        e.contains("needs --etcd-cert, --etcd-key") && !e.contains("--etcd-cacert,"),
        "{e}"
    );
    x.etcd_cert = Some("c".into());
    x.etcd_key = Some("k".into());
    let p = plan(&x).unwrap();
    // The API alone: gke-admin does not go looking for the node's PKI over SSH.
    assert_eq!((p.etcd, p.pki), (EtcdFrom::KubePortForward, PkiFrom::None));
    assert!(p.warning.unwrap().contains("no PKI"));
    x.ssh = Some("root@node".into());
    assert_eq!(plan(&x).unwrap().pki, PkiFrom::Ssh);
    x.etcd_via_ssh = Some(true);
    assert!(plan(&x)
        .unwrap_err()
        .0
        .contains("--etcd-via-ssh and --etcd-via-portforward"));
    let mut y = s();
    y.etcd_endpoints = vec!["https://127.0.0.1:2379".into()];
    y.etcd_pod_port = Some(2379);
    assert!(plan(&y)
        .unwrap_err()
        .0
        .contains("go with --etcd-via-portforward"));
}

#[test]
fn node_etcdctl_settings_override_the_profile_and_empty_drops_a_flag() {
    let mut x = s();
    x.node_etcd_endpoint = Some("http://127.0.0.1:1".into());
    x.node_etcd_cacert = Some(String::new());
    let r = remote_etcdctl(&x, Profile::GkeUser.etcdctl());
    assert_eq!(r.endpoint, "http://127.0.0.1:1");
    assert_eq!(r.cacert, None);
    assert_eq!(
        r.cert.as_deref(),
        Some("/etcd.local.config/certificates/etcd.crt")
    );
}
