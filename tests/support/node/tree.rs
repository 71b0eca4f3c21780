//! The sandbox node's filesystem: the tree a kubeadm node has (`etc/kubernetes/{manifests,
//! pki,admin.conf}`, `var/lib/etcd` with its owner and mode), etcd.yaml with this node's
//! ports, and a snapshot of the whole tree that a restore test compares before and after.
//! It only lays out and reads files; running them is the kubelet's job.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::super::make_pki;
use super::{SandboxNode, ETCD_UID};

/// Creates the node's tree below `root` (the manifests dir empty).
pub(super) fn lay_out(root: &Path) {
    let kube = root.join("etc/kubernetes");
    fs::create_dir_all(kube.join("manifests")).unwrap();
    make_pki(&kube.join("pki"));
    // Like kubeadm: 0700, and owned by a dedicated etcd user where we can chown.
    let data = root.join("var/lib/etcd");
    fs::create_dir_all(&data).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    if fs::metadata(root.parent().unwrap()).unwrap().uid() == 0 {
        std::os::unix::fs::chown(&data, Some(ETCD_UID), Some(ETCD_UID)).unwrap();
    }
    fs::write(kube.join("admin.conf"), ADMIN_CONF).unwrap();
    fs::set_permissions(kube.join("admin.conf"), fs::Permissions::from_mode(0o600)).unwrap();
}

impl SandboxNode {
    /// etcd.yaml as kubeadm writes it, with this node's paths and ports.
    pub fn etcd_yaml(&self) -> String {
        let (data, client, peer) = (self.data_dir(), self.client_url(), self.peer_url());
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\n  \
             labels:\n    component: etcd\n    tier: control-plane\nspec:\n  containers:\n  \
             - name: etcd\n    image: registry.k8s.io/etcd:3.4.23-0\n    command:\n    - etcd\n    \
             - --name={}\n    - --data-dir={}\n    - --listen-client-urls={client}\n    \
             - --advertise-client-urls={client}\n    - --listen-peer-urls={peer}\n    \
             - --initial-advertise-peer-urls={peer}\n    - --initial-cluster={}\n    \
             - --initial-cluster-state=new\n  hostNetwork: true\n",
            self.member,
            data.display(),
            self.initial_cluster(),
        )
    }

    /// Every file and directory below `root()` (not `root()` itself), sorted: relative path,
    /// mode (permission bits), uid, gid and content. Files below the etcd data dir get empty
    /// content, since a running etcd rewrites them constantly; `*.log` files are skipped.
    /// Symlinks are not followed; their content is the link target.
    pub fn snapshot_tree(&self) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
        let mut out = vec![];
        walk(&self.root, &self.root, &self.data_dir(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, data: &Path, out: &mut Vec<(String, u32, u32, u32, Vec<u8>)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for p in entries.filter_map(|e| Some(e.ok()?.path())) {
        // etcd may delete a file between read_dir and here; such a file is simply skipped.
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_file() && p.extension().is_some_and(|e| e == "log") {
            continue;
        }
        let content = if m.is_symlink() {
            fs::read_link(&p)
                .map(|t| t.into_os_string().into_encoded_bytes())
                .unwrap_or_default()
        } else if m.is_file() && !p.starts_with(data) {
            fs::read(&p).unwrap()
        } else {
            vec![]
        };
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        out.push((rel, m.mode() & 0o7777, m.uid(), m.gid(), content));
        if m.is_dir() {
            walk(root, &p, data, out);
        }
    }
}

pub(super) const APISERVER_YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
  labels:
    component: kube-apiserver
    tier: control-plane
spec:
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.33.0
    # A stand-in: the restore only stops and starts it.
    command:
    - sleep
    - \"100000\"
  hostNetwork: true
";

pub(super) const ADMIN_CONF: &str = "\
apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://127.0.0.1:6443
  name: sandbox
contexts:
- context:
    cluster: sandbox
    user: kubernetes-admin
  name: kubernetes-admin@sandbox
current-context: kubernetes-admin@sandbox
users:
- name: kubernetes-admin
  user:
    token: sandbox-admin-token
";
