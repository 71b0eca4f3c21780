//! Turns the merged source settings into entries: a pure [`plan`] decides which source
//! provides the etcd snapshot and which the PKI (and refuses contradictions), then
//! [`gather`] opens the connections it needs — once each — and asks each source for its
//! entries. What must happen after the backup (remote temp dirs removed, connections closed,
//! the SSH master connections) is returned with the entries and run by
//! [`Gathered::finish`], whatever the backup's outcome.

use std::path::PathBuf;

use super::agent::SecretKey;
use super::etcd_grpc::EtcdEndpoint;
use super::etcd_portforward::{self, PortForwardSettings};
use super::etcd_tunnel::{self, Overrides, TunnelSettings};
use super::kube::{Cluster, KubeTarget, Profile};
use super::settings::Sources;
use super::ssh::{Node, SshTarget};
use super::{local, Cleanup, SourceEntry, SourceError};
use crate::error::Usage;
use crate::etcdctl::RemoteEtcdctl;

/// Where the etcd snapshot comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdFrom {
    /// No snapshot.
    None,
    /// A local file.
    File(PathBuf),
    /// Direct gRPC.
    Grpc,
    /// etcdctl exec'd in the etcd pod.
    KubeExec,
    /// etcdctl on the node over SSH.
    Ssh,
    /// gRPC to the node's etcd through the SSH connection.
    SshTunnel,
    /// gRPC to the etcd pod through the API server's port-forward.
    KubePortForward,
}

/// Where the PKI comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkiFrom {
    /// No PKI.
    None,
    /// A local directory.
    Local(PathBuf),
    /// The node given with --ssh.
    Ssh,
    /// The control-plane node found through the kubeconfig.
    DiscoveredNode,
}

/// The decision of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// etcd source.
    pub etcd: EtcdFrom,
    /// PKI source.
    pub pki: PkiFrom,
    /// A warning to print (e.g. a backup without PKI).
    pub warning: Option<String>,
}

/// Decides the sources.
///
/// # Errors
/// [`Usage`] when two etcd sources are given, a flag misses its partner, or nothing at all
/// is to be backed up.
pub fn plan(s: &Sources) -> Result<Plan, Usage> {
    let mut etcd = vec![];
    if let Some(f) = &s.etcd_snapshot_file {
        etcd.push(("--etcd-snapshot-file", EtcdFrom::File(f.clone())));
    }
    if !s.etcd_endpoints.is_empty() {
        etcd.push(("--etcd-endpoint", EtcdFrom::Grpc));
    }
    let via_ssh = s.etcd_via_ssh == Some(true);
    let via_pf = s.etcd_via_portforward == Some(true);
    // With --etcd-via-ssh, the kubeconfig only finds the node; with --etcd-via-portforward
    // it is the way to etcd.
    if s.kubeconfig.is_some() && !via_ssh && !via_pf {
        etcd.push(("--kubeconfig", EtcdFrom::KubeExec));
    }
    if s.ssh_etcd == Some(true) {
        etcd.push(("--ssh-etcd", EtcdFrom::Ssh));
    }
    if via_ssh {
        etcd.push(("--etcd-via-ssh", EtcdFrom::SshTunnel));
    }
    if via_pf {
        etcd.push(("--etcd-via-portforward", EtcdFrom::KubePortForward));
    }
    if etcd.len() > 1 {
        let names: Vec<_> = etcd.iter().map(|(n, _)| *n).collect();
        return Err(Usage(format!(
            "give one etcd source, not {}",
            names.join(" and ")
        )));
    }
    let etcd = etcd.pop().map(|(_, e)| e).unwrap_or(EtcdFrom::None);
    if s.kubeconfig.is_some() && s.profile.is_none() {
        return Err(Usage(
            "--kubeconfig needs --profile gke-admin, gke-user or kubeadm (where etcd runs and which certificates it uses)".into(),
        ));
    }
    if s.profile == Some(Profile::GkeUser) && s.namespace.is_none() {
        return Err(Usage(
            "--profile gke-user needs --namespace USER_CLUSTER_NAME (the user cluster's namespace in the admin cluster)".into(),
        ));
    }
    if etcd == EtcdFrom::Ssh && s.ssh.is_none() {
        return Err(Usage("--ssh-etcd needs --ssh USER@HOST".into()));
    }
    if etcd == EtcdFrom::SshTunnel {
        if s.profile == Some(Profile::GkeUser) {
            return Err(Usage(
                "--etcd-via-ssh reaches the etcd of a control-plane node; a GKE user cluster's etcd runs in the admin cluster: use --profile gke-user without it".into(),
            ));
        }
        if s.ssh.is_none() && !node_discoverable(s) {
            return Err(Usage(
                "--etcd-via-ssh needs the node: --ssh USER@HOST, or --kubeconfig with --profile gke-admin (or --profile kubeadm with --ssh-key FILE) to find it".into(),
            ));
        }
    }
    if !via_pf && (s.etcd_pod_port.is_some() || s.etcd_server_name.is_some()) {
        return Err(Usage(
            "--etcd-pod-port and --etcd-server-name go with --etcd-via-portforward".into(),
        ));
    }
    if etcd == EtcdFrom::KubePortForward {
        if s.kubeconfig.is_none() {
            return Err(Usage(
                "--etcd-via-portforward needs --kubeconfig FILE with --profile (the cluster whose etcd pod is forwarded to)".into(),
            ));
        }
        let missing: Vec<&str> = [
            ("--etcd-cacert", s.etcd_cacert.is_none()),
            ("--etcd-cert", s.etcd_cert.is_none()),
            ("--etcd-key", s.etcd_key.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(f, _)| *f)
        .collect();
        if !missing.is_empty() {
            return Err(Usage(format!(
                "--etcd-via-portforward needs {}: etcd's CA and a client certificate and key it trusts, as local files (kubeadm: copies of a control-plane node's /etc/kubernetes/pki/etcd/ca.crt and healthcheck-client.crt/.key)",
                missing.join(", ")
            )));
        }
    }
    if s.etcd_cert.is_some() != s.etcd_key.is_some() {
        return Err(Usage("--etcd-cert and --etcd-key go together".into()));
    }
    let mut warning = None;
    let pki = if let Some(d) = &s.pki_dir {
        if s.ssh.is_some() {
            return Err(Usage(
                "give one PKI source: --pki-dir (local) or --ssh (the node's --ssh-pki-dir)".into(),
            ));
        }
        PkiFrom::Local(d.clone())
    } else if s.ssh.is_some() {
        PkiFrom::Ssh
    } else if node_discoverable(s) {
        PkiFrom::DiscoveredNode
    } else {
        // A snapshot file alone is a hand-made backup; a live etcd without PKI is a mistake.
        if !matches!(etcd, EtcdFrom::None | EtcdFrom::File(_)) {
            warning = Some(
                "this backup has no PKI: without the cluster's CA keys a restored etcd cannot be used by the old nodes; add --ssh USER@HOST or --pki-dir DIR".into(),
            );
        }
        PkiFrom::None
    };
    if etcd == EtcdFrom::None && pki == PkiFrom::None && s.files.is_empty() {
        return Err(Usage(
            "nothing to back up: give an etcd source (--etcd-snapshot-file, --etcd-endpoint, --kubeconfig with --profile, or --ssh with --etcd-via-ssh or --ssh-etcd), a PKI source (--pki-dir or --ssh) and/or --file PATH".into(),
        ));
    }
    Ok(Plan { etcd, pki, warning })
}

/// Whether the control-plane node and its key can be found through the cluster's API: a
/// GKE admin cluster keeps the key in a secret; a kubeadm cluster needs `--ssh-key`. The
/// port-forward is the way for when SSH is not available, so it never looks for the node.
fn node_discoverable(s: &Sources) -> bool {
    s.kubeconfig.is_some()
        && s.etcd_via_portforward != Some(true)
        && (s.profile == Some(Profile::GkeAdmin)
            || (s.profile == Some(Profile::Kubeadm) && s.ssh_key.is_some()))
}

/// Entries, with what must run after the backup.
pub struct Gathered {
    /// The entries, in archive order.
    pub entries: Vec<SourceEntry>,
    /// One description per source, for the manifest's `source`.
    pub described: Vec<String>,
    /// Where a node backup's recovery kit came from.
    pub kit: Option<crate::archive::manifest::KitInfo>,
    cleanups: Vec<Cleanup>,
    nodes: Vec<Node>,
}

impl Gathered {
    /// Removes remote temp files and closes connections; call after the backup, whether it
    /// succeeded or not.
    pub async fn finish(self) {
        for c in self.cleanups {
            c.await;
        }
        for n in self.nodes {
            n.close().await;
        }
    }
}

fn remote_etcdctl(s: &Sources, base: RemoteEtcdctl) -> RemoteEtcdctl {
    base.with_overrides(
        s.node_etcdctl.as_ref(),
        s.node_etcd_endpoint.as_ref(),
        s.node_etcd_cacert.as_ref(),
        s.node_etcd_cert.as_ref(),
        s.node_etcd_key.as_ref(),
    )
}

/// The SSH settings of `s` for the node `dest` (`USER@HOST`).
pub fn ssh_target(s: &Sources, dest: &str) -> SshTarget {
    let mut t = SshTarget::from_destination(dest);
    if t.user.is_none() {
        t.user = s.ssh_user.clone();
    }
    t.port = s.ssh_port;
    t.key = s.ssh_key.clone();
    t.jump = s.ssh_jump.clone();
    t.known_hosts = s.ssh_known_hosts.clone();
    t.accept_new = s.ssh_accept_new == Some(true);
    t.sudo = s.ssh_sudo.unwrap_or_default();
    t
}

/// The control-plane node found through the cluster's API.
pub struct DiscoveredNode {
    /// How to reach it (user `ubuntu` unless `ssh_user` says otherwise); unless the settings
    /// give `ssh_key`, it carries the node key from `kube-system/sshkeys` in memory.
    pub target: SshTarget,
    /// Node name.
    pub name: String,
    /// The address used.
    pub address: String,
}

/// Finds the control-plane node and, unless a key is given, its SSH key in the cluster
/// (kept in memory; [`Node::connect`] offers it through a private ssh-agent).
///
/// # Errors
/// The API calls' errors ([`super::SourceError::Kube`]).
pub async fn discover_node(c: &Cluster, s: &Sources) -> anyhow::Result<DiscoveredNode> {
    let (name, address) = c.control_plane_address().await?;
    Ok(discovered(s, name, address, node_key(c, s).await?))
}

/// Every control-plane node (by name), as [`discover_node`] finds the first: restore onto an
/// HA control plane goes to all of them.
///
/// # Errors
/// As [`discover_node`].
pub async fn discover_nodes(c: &Cluster, s: &Sources) -> anyhow::Result<Vec<DiscoveredNode>> {
    let addresses = c.control_plane_addresses().await?;
    // One key for the cluster's nodes: read from the API once.
    let key = node_key(c, s).await?;
    Ok(addresses
        .into_iter()
        .map(|(name, address)| discovered(s, name, address, key.clone()))
        .collect())
}

/// The node key from the cluster, unless one is given (`--ssh-key`).
async fn node_key(c: &Cluster, s: &Sources) -> anyhow::Result<Option<SecretKey>> {
    Ok(match s.ssh_key {
        Some(_) => None,
        None => Some(SecretKey::new(c.ssh_key().await?)),
    })
}

fn discovered(
    s: &Sources,
    name: String,
    address: String,
    key: Option<SecretKey>,
) -> DiscoveredNode {
    let mut target = ssh_target(s, &address);
    target.user = Some(s.ssh_user.clone().unwrap_or_else(|| "ubuntu".into()));
    if target.key.is_none() {
        target.key_in_memory = key;
    }
    DiscoveredNode {
        target,
        name,
        address,
    }
}

/// The node to work on: the one `--ssh` names (`s.ssh`), else the control-plane node found
/// through `cluster`. Backup and restore both reach their node through this.
pub enum NodeAt {
    /// Given with `--ssh`.
    Given(SshTarget),
    /// Found through the cluster's API.
    Discovered(DiscoveredNode),
}

/// Finds the node: `s.ssh` when set, else through `cluster` (see [`discover_node`]).
///
/// # Errors
/// No `s.ssh` and no cluster to ask (a usage error), or [`discover_node`]'s errors.
pub async fn locate_node(s: &Sources, cluster: Option<&Cluster>) -> anyhow::Result<NodeAt> {
    match (&s.ssh, cluster) {
        (Some(dest), _) => Ok(NodeAt::Given(ssh_target(s, dest))),
        (None, Some(c)) => Ok(NodeAt::Discovered(discover_node(c, s).await?)),
        (None, None) => Err(Usage(
            "no node to reach: pass --ssh USER@HOST, or --kubeconfig to find it through the cluster's API".into(),
        )
        .into()),
    }
}

/// Opens every source of the plan and returns its entries; `warn` prints the plan's warning
/// on stderr.
///
/// # Errors
/// The first source that fails, with its own one-line message; anything already opened is
/// cleaned up first.
pub async fn gather(s: &Sources, warn: bool) -> anyhow::Result<Gathered> {
    let plan = plan(s)?;
    if let (Some(w), true) = (&plan.warning, warn) {
        crate::say!("warning: {w}");
    }
    let mut g = Gathered {
        entries: vec![],
        described: vec![],
        kit: None,
        cleanups: vec![],
        nodes: vec![],
    };
    match fill(s, &plan, &mut g, warn).await {
        Ok(()) => Ok(g),
        Err(e) => {
            g.finish().await;
            Err(e)
        }
    }
}

async fn fill(s: &Sources, plan: &Plan, g: &mut Gathered, warn: bool) -> anyhow::Result<()> {
    let cluster = match &s.kubeconfig {
        Some(k) => Some(
            Cluster::connect(&KubeTarget {
                kubeconfig: k.clone(),
                context: s.context.clone(),
                profile: s.profile.expect("plan checked"),
                namespace: s.namespace.clone(),
            })
            .await?,
        ),
        None => None,
    };
    // The node: given, or found through the cluster (with its key from the secret).
    let node = match (&plan.pki, &plan.etcd) {
        (PkiFrom::Ssh | PkiFrom::DiscoveredNode, _) | (_, EtcdFrom::Ssh | EtcdFrom::SshTunnel) => {
            let target = match locate_node(s, cluster.as_ref()).await? {
                NodeAt::Given(t) => t,
                NodeAt::Discovered(found) => {
                    let (t, name, addr) = (found.target, found.name, found.address);
                    tracing::info!("control-plane node {name} at {addr}");
                    g.described.push(format!("node:{name}"));
                    t
                }
            };
            Some(Node::connect(&target).await?)
        }
        _ => None,
    };
    match &plan.etcd {
        EtcdFrom::None => {}
        EtcdFrom::File(p) => {
            let mut entry = local::snapshot_file(p)?;
            entry.etcd_later = Some(local::snapshot_facts(p));
            g.entries.push(entry);
            g.described
                .push(format!("etcd-snapshot-file:{}", p.display()));
        }
        EtcdFrom::Grpc => {
            let ep = EtcdEndpoint {
                endpoints: s.etcd_endpoints.clone(),
                cacert: s.etcd_cacert.clone(),
                cert: s.etcd_cert.clone(),
                key: s.etcd_key.clone(),
            };
            g.entries.push(super::etcd_grpc::snapshot(&ep, warn).await?);
            g.described
                .push(format!("etcd-grpc:{}", s.etcd_endpoints.join(",")));
        }
        EtcdFrom::KubeExec => {
            let c = cluster.as_ref().expect("plan checked");
            let profile = s.profile.expect("plan checked");
            let ctl = remote_etcdctl(s, profile.etcdctl());
            let pod = c.choose_member(c.etcd_pods().await?, &ctl, !warn).await;
            match c.etcd_snapshot(&pod, &ctl).await {
                Ok((entry, cleanup)) => {
                    g.entries.push(entry);
                    g.cleanups.push(cleanup);
                    g.described.push(format!(
                        "kube-exec:{}/{} ({})",
                        pod.namespace,
                        pod.name,
                        profile.name()
                    ));
                }
                Err(SourceError::Missing {
                    place,
                    tool,
                    detail,
                    ..
                }) => {
                    let Some(n) = node.as_ref() else {
                        return Err(no_way_around(s, &place, tool, &detail).into());
                    };
                    say_fallback(&place, tool, n);
                    tunnel(s, n, g).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        EtcdFrom::Ssh => {
            let n = node.as_ref().expect("plan checked");
            match n
                .etcd_snapshot(&remote_etcdctl(s, Profile::Kubeadm.etcdctl()))
                .await
            {
                Ok((entry, cleanup)) => {
                    g.entries.push(entry);
                    g.cleanups.push(cleanup);
                    g.described
                        .push(format!("ssh-etcdctl:{}", s.ssh.as_deref().unwrap_or("")));
                }
                Err(SourceError::Missing { place, tool, .. }) => {
                    say_fallback(&place, tool, n);
                    tunnel(s, n, g).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        EtcdFrom::SshTunnel => {
            tunnel(s, node.as_ref().expect("plan checked"), g).await?;
        }
        EtcdFrom::KubePortForward => {
            let c = cluster.as_ref().expect("plan checked");
            let pod = c.etcd_pod().await?;
            let settings = PortForwardSettings {
                port: s.etcd_pod_port,
                server_name: s.etcd_server_name.clone(),
                cacert: s.etcd_cacert.clone().expect("plan checked"),
                cert: s.etcd_cert.clone().expect("plan checked"),
                key: s.etcd_key.clone().expect("plan checked"),
            };
            let (entry, port) = etcd_portforward::snapshot(c, &pod, &settings).await?;
            g.entries.push(entry);
            g.described.push(format!(
                "kube-portforward:{}/{}:{port} ({})",
                pod.namespace,
                pod.name,
                s.profile.expect("plan checked").name()
            ));
        }
    }
    match &plan.pki {
        PkiFrom::None => {}
        PkiFrom::Local(d) => {
            g.entries.extend(local::pki_dir(d)?);
            g.described.push(format!("pki-dir:{}", d.display()));
        }
        PkiFrom::Ssh | PkiFrom::DiscoveredNode => {
            let n = node.as_ref().expect("a node was connected");
            let dir = s.ssh_pki_dir.as_deref().unwrap_or("/etc/kubernetes/pki");
            g.entries.extend(n.pki(dir).await?);
            g.described.push(format!("ssh-pki:{dir}"));
            let kit = super::kit::read(n, &kit_settings(s)).await?;
            if warn {
                for w in &kit.warnings {
                    crate::say!("warning: {w}");
                }
            }
            if !kit.entries.is_empty() {
                g.described.push("ssh-kit".into());
                g.entries.extend(kit.entries);
                g.kit = Some(kit.info);
            }
        }
    }
    if let Some(n) = node {
        g.nodes.push(n);
    }
    for p in &s.files {
        let e = local::plain_file(p)?;
        if g.kit.is_some() && e.path == super::kit::KIT_FILE_NAME {
            return Err(Usage(format!(
                "--file '{}': the name {} holds the node's recovery kit in this backup; rename the file",
                p.display(),
                e.path
            ))
            .into());
        }
        if g.entries.iter().any(|x| x.path == e.path) {
            return Err(Usage(format!(
                "--file '{}': another file named {} is already included",
                p.display(),
                e.path
            ))
            .into());
        }
        g.entries.push(e);
        g.described.push(format!("file:{}", p.display()));
    }
    Ok(())
}

/// What of the recovery kit to read from the node, and where.
fn kit_settings(s: &Sources) -> super::kit::KitSettings {
    super::kit::KitSettings {
        manifests_dir: s
            .ssh_manifests_dir
            .clone()
            .unwrap_or_else(|| "/etc/kubernetes/manifests".into()),
        admin_conf: s
            .ssh_admin_conf
            .clone()
            .unwrap_or_else(|| "/etc/kubernetes/admin.conf".into()),
        encryption_config: s.no_encryption_config != Some(true),
    }
}

/// The snapshot over gRPC through the SSH connection to `n`.
async fn tunnel(s: &Sources, n: &Node, g: &mut Gathered) -> Result<(), SourceError> {
    let t = TunnelSettings {
        manifests_dir: s
            .ssh_manifests_dir
            .clone()
            .unwrap_or_else(|| "/etc/kubernetes/manifests".into()),
        overrides: Overrides {
            endpoint: s.node_etcd_endpoint.clone(),
            cacert: s.node_etcd_cacert.clone(),
            cert: s.node_etcd_cert.clone(),
            key: s.node_etcd_key.clone(),
        },
    };
    let (entry, endpoint) = etcd_tunnel::snapshot(n, &t).await?;
    g.entries.push(entry);
    g.described
        .push(format!("ssh-etcd-tunnel:{} to {endpoint}", n.destination()));
    Ok(())
}

fn say_fallback(place: &str, tool: &str, n: &Node) {
    crate::say!(
        "note: {place} has no {tool}; taking the etcd snapshot over gRPC through the SSH connection to {} instead (as --etcd-via-ssh does)",
        n.destination()
    );
}

/// The error for a profile whose etcd pod lacks a tool when no node can be reached: the
/// flags that would work.
fn no_way_around(s: &Sources, place: &str, tool: &str, detail: &str) -> SourceError {
    let fix = match s.profile {
        Some(Profile::GkeUser) => "a GKE user cluster's etcd is reached only through the admin cluster: add --etcd-via-portforward with --etcd-cacert, --etcd-cert and --etcd-key (gRPC through the API server's port-forward)".to_string(),
        _ => "take the snapshot over gRPC through SSH instead: add --ssh USER@HOST (the control-plane node), or --ssh-key FILE to reach the node found through the API; or through the API server with --etcd-via-portforward, or give --etcd-endpoint URL, each with --etcd-cacert, --etcd-cert and --etcd-key".to_string(),
    };
    SourceError::Kube {
        message: format!("{place} has no {tool} ({detail})"),
        fix,
    }
}

#[cfg(test)]
mod tests;
