//! Kubernetes source: finds the etcd pod the profile describes (design.md §1), takes a
//! snapshot by exec'ing etcdctl inside it and streams it back over the exec stdout; and, for
//! the auto mode, finds the control-plane node's address and the node SSH key in
//! `kube-system/sshkeys`. The profile logic (which pod, which certificates) is pure and next
//! to the calls. The SSH key is returned in memory; the caller decides where it may live.
//! Nothing in the cluster is changed except a private temp dir inside the etcd container,
//! removed after the snapshot is streamed.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{AttachParams, ListParams};
use kube::{Api, Client};
use zeroize::Zeroizing;

use super::etcdctl::{self, Saved};
use super::{Cleanup, KeepAlive, SourceError};
use crate::archive::writer::SourceEntry;
use crate::etcdctl::RemoteEtcdctl;

// Which member of an HA control plane to take the snapshot from.
mod members;
// An exec run to its end.
mod attached;
pub use attached::{finish, Ran};

/// Which kind of cluster the kubeconfig leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// A GKE on VMware admin cluster (kubeadm layout, node SSH key in kube-system/sshkeys).
    GkeAdmin,
    /// A GKE on VMware user cluster, whose etcd runs in the admin cluster: pod kube-etcd-0
    /// in the namespace named after the user cluster.
    GkeUser,
    /// A kubeadm cluster.
    Kubeadm,
}

impl Profile {
    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::GkeAdmin => "gke-admin",
            Profile::GkeUser => "gke-user",
            Profile::Kubeadm => "kubeadm",
        }
    }

    /// How etcdctl reaches etcd from inside the etcd pod.
    pub fn etcdctl(self) -> RemoteEtcdctl {
        match self {
            Profile::GkeAdmin | Profile::Kubeadm => RemoteEtcdctl::kubeadm(),
            Profile::GkeUser => RemoteEtcdctl {
                command: "etcdctl".into(),
                endpoint: "https://127.0.0.1:2379".into(),
                cacert: Some("/etcd.local.config/certificates/etcdCA.crt".into()),
                cert: Some("/etcd.local.config/certificates/etcd.crt".into()),
                key: Some("/etcd.local.config/certificates/etcd.key".into()),
            },
        }
    }
}

/// Which tool an exec's failure says is missing from the container: `sh` when the runtime
/// could not start it (a distroless etcd image), etcdctl when the save script said so.
fn missing_tool(said: &str) -> Option<&'static str> {
    let not_found =
        said.contains("executable file not found") || said.contains("no such file or directory");
    if said.contains("exec: \"sh\"") && not_found {
        Some("sh")
    } else if said.contains(&format!("exit status {}", etcdctl::NO_ETCDCTL)) {
        Some("etcdctl")
    } else {
        None
    }
}

/// Where the cluster is.
#[derive(Debug, Clone)]
pub struct KubeTarget {
    /// kubeconfig file.
    pub kubeconfig: PathBuf,
    /// Context (`None`: the current one).
    pub context: Option<String>,
    /// Profile.
    pub profile: Profile,
    /// User cluster namespace (gke-user).
    pub namespace: Option<String>,
}

/// The etcd pod found for a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPod {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Container (`None`: the pod's only one).
    pub container: Option<String>,
    /// The etcd container's command line (`command` then `args`), which says where etcd
    /// listens and which name it advertises.
    pub args: Vec<String>,
}

/// `(name, address)` of a node: its ExternalIP, else its InternalIP.
fn address_of(node: &Node) -> Result<(String, String), SourceError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let addrs = (node.status.as_ref())
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a.type_ == t)
            .map(|a| a.address.clone())
    };
    let addr = pick("ExternalIP")
        .or_else(|| pick("InternalIP"))
        .ok_or_else(|| {
            fail(
                format!("control-plane node {name} has no ExternalIP or InternalIP address"),
                "give the node with --ssh USER@HOST",
            )
        })?;
    Ok((name, addr))
}

/// The command line of the pod's etcd container: `container` when named, else the one
/// called etcd, else the first.
fn container_args(pod: &Pod, container: Option<&str>) -> Vec<String> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let wanted = container.unwrap_or("etcd");
    let found = containers
        .iter()
        .find(|c| c.name == wanted)
        .or_else(|| containers.first().filter(|_| container.is_none()));
    found
        .map(|c| {
            let mut all = c.command.clone().unwrap_or_default();
            all.extend(c.args.clone().unwrap_or_default());
            all
        })
        .unwrap_or_default()
}

/// A connected API client and the profile that says what to look for.
pub struct Cluster {
    client: Client,
    target: KubeTarget,
}

fn kube_err(what: &str, e: &kube::Error, fix: &str) -> SourceError {
    let (message, fix) = match e {
        kube::Error::Api(s) if s.code == 401 => (
            format!("{what}: the API server refused the kubeconfig's credentials (401 {})", s.message),
            "refresh the kubeconfig or its token".to_string(),
        ),
        kube::Error::Api(s) if s.code == 403 => (
            format!("{what}: forbidden ({})", s.message),
            "use a kubeconfig whose user may read pods, nodes and secrets and exec into pods in that namespace (the admin kubeconfig)".to_string(),
        ),
        kube::Error::Api(s) => (format!("{what}: {} ({} {})", s.message, s.code, s.reason), fix.to_string()),
        other => {
            let text = super::error_chain(other);
            (
                format!("{what}: cannot reach the API server ({text})"),
                "check --kubeconfig, --context and that the API server is reachable from here".to_string(),
            )
        }
    };
    SourceError::Kube { message, fix }
}

fn fail(message: String, fix: &str) -> SourceError {
    SourceError::Kube {
        message,
        fix: fix.to_string(),
    }
}

impl Cluster {
    /// Loads the kubeconfig and builds a client (no request is made yet).
    ///
    /// # Errors
    /// [`SourceError::Kube`] when the file is unreadable or the context does not exist.
    pub async fn connect(t: &KubeTarget) -> Result<Cluster, SourceError> {
        let file = t.kubeconfig.display();
        let kc = kube::config::Kubeconfig::read_from(&t.kubeconfig).map_err(|e| {
            fail(
                format!("cannot read kubeconfig {file}: {e}"),
                "check --kubeconfig",
            )
        })?;
        let opts = kube::config::KubeConfigOptions {
            context: t.context.clone(),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| {
                fail(
                    format!("kubeconfig {file}: {e}"),
                    "check --context (kubectl config get-contexts --kubeconfig FILE lists them)",
                )
            })?;
        let client = Client::try_from(config).map_err(|e| {
            fail(
                format!("kubeconfig {file}: cannot build a client: {e}"),
                "check the kubeconfig's cluster and user entries",
            )
        })?;
        Ok(Cluster {
            client,
            target: t.clone(),
        })
    }

    /// The API client, for callers that talk to other objects (the user-cluster restore).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Finds the running etcd pod of the profile (the first by name when there are several).
    ///
    /// # Errors
    /// As [`Cluster::etcd_pods`].
    pub async fn etcd_pod(&self) -> Result<EtcdPod, SourceError> {
        let mut pods = self.etcd_pods().await?;
        Ok(pods.remove(0))
    }

    /// Finds the running etcd pods of the profile, by name: one per control-plane node (three
    /// on an HA control plane), or a GKE user cluster's `kube-etcd-0`. Never empty.
    ///
    /// # Errors
    /// [`SourceError::Kube`] when no pod matches, naming what was looked for and the fix.
    pub async fn etcd_pods(&self) -> Result<Vec<EtcdPod>, SourceError> {
        let profile = self.target.profile;
        match profile {
            Profile::GkeAdmin | Profile::Kubeadm => {
                let selector = "component=etcd,tier=control-plane";
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), "kube-system");
                let list = pods
                    .list(&ListParams::default().labels(selector))
                    .await
                    .map_err(|e| {
                        kube_err("listing etcd pods in kube-system", &e, "check --kubeconfig")
                    })?;
                let mut running: Vec<_> = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .filter_map(|p| p.metadata.name.clone().map(|n| (n, p)))
                    .collect();
                running.sort_by(|a, b| a.0.cmp(&b.0));
                if running.is_empty() {
                    return Err(fail(
                        format!(
                            "no running pod in kube-system with labels {selector} (profile {}; {} pod(s) matched but none is Running)",
                            profile.name(),
                            list.items.len()
                        ),
                        "use the admin cluster's kubeconfig; for a GKE user cluster use --profile gke-user --namespace USER_CLUSTER",
                    ));
                }
                Ok(running
                    .into_iter()
                    .map(|(name, pod)| EtcdPod {
                        namespace: "kube-system".into(),
                        name,
                        container: None,
                        args: container_args(pod, None),
                    })
                    .collect())
            }
            Profile::GkeUser => {
                let ns = self.target.namespace.clone().ok_or_else(|| {
                    fail(
                        "profile gke-user needs the user cluster's namespace".into(),
                        "pass --namespace USER_CLUSTER_NAME (with the admin cluster's kubeconfig)",
                    )
                })?;
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                match pods.get_opt("kube-etcd-0").await {
                    Ok(Some(pod)) => Ok(vec![EtcdPod {
                        namespace: ns,
                        name: "kube-etcd-0".into(),
                        container: Some("kube-etcd".into()),
                        args: container_args(&pod, Some("kube-etcd")),
                    }]),
                    Ok(None) => Err(fail(
                        format!("no pod kube-etcd-0 in namespace {ns} (profile gke-user)"),
                        "--namespace must be the user cluster's name and --kubeconfig the admin cluster's kubeconfig",
                    )),
                    Err(e) => Err(kube_err(&format!("reading pod {ns}/kube-etcd-0"), &e, "check --kubeconfig")),
                }
            }
        }
    }

    async fn exec(
        &self,
        pod: &EtcdPod,
        script: &str,
    ) -> Result<kube::api::AttachedProcess, SourceError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let mut ap = AttachParams::default()
            .stdin(false)
            .stdout(true)
            .stderr(true);
        if let Some(c) = &pod.container {
            ap = ap.container(c.clone());
        }
        pods.exec(&pod.name, ["sh", "-c", script], &ap)
            .await
            .map_err(|e| {
                kube_err(
                    &format!("exec in pod {}/{}", pod.namespace, pod.name),
                    &e,
                    "check that the pod runs and its container has sh",
                )
            })
    }

    /// Runs `script` in the pod to the end; returns stdout, or the failure with stderr.
    async fn run(&self, pod: &EtcdPod, script: &str) -> Result<String, String> {
        let p = self.exec(pod, script).await.map_err(|e| e.to_string())?;
        let ran = finish(p).await;
        if ran.ok {
            Ok(String::from_utf8_lossy(&ran.stdout).into_owned())
        } else {
            Err(ran.said)
        }
    }

    /// Takes a snapshot with etcdctl inside the etcd pod and returns the entry streaming it
    /// back over exec, plus the cleanup that removes the pod's temp dir.
    ///
    /// # Errors
    /// [`SourceError::Kube`] with etcdctl's message when the snapshot fails.
    pub async fn etcd_snapshot(
        &self,
        pod: &EtcdPod,
        e: &RemoteEtcdctl,
    ) -> Result<(SourceEntry, Cleanup), SourceError> {
        let where_ = format!("pod {}/{}", pod.namespace, pod.name);
        let out = self.run(pod, &etcdctl::save_script(e)).await.map_err(|m| {
            if let Some(tool) = missing_tool(&m) {
                return SourceError::Missing {
                    place: where_.clone(),
                    tool,
                    detail: m,
                    fix: "the etcd image has no shell or etcdctl (distroless since etcd 3.5.7): take the snapshot with --etcd-via-ssh through the node, with --etcd-via-portforward through the API server, or with --etcd-endpoint".into(),
                };
            }
            fail(
                format!("etcdctl snapshot save failed in {where_}: {m}"),
                "check the profile's certificate paths (--node-etcd-cacert/--node-etcd-cert/--node-etcd-key) and --node-etcd-endpoint",
            )
        })?;
        let saved = etcdctl::parse_saved(&out)
            .map_err(|m| fail(format!("{where_}: {m}"), "check --node-etcdctl"))?;
        let facts = etcdctl::parse_facts(&out);
        // From here on every error path removes the temp dir: it holds the whole database.
        let cleanup = self.cleanup(pod.clone(), saved.clone());
        if saved.size == 0 {
            cleanup.await;
            return Err(fail(
                format!("{where_}: etcdctl saved an empty snapshot"),
                "check etcd's health",
            ));
        }
        let mut p = match self.exec(pod, &etcdctl::cat_script(&saved)).await {
            Ok(p) => p,
            Err(e) => {
                cleanup.await;
                return Err(e);
            }
        };
        let stdout = p.stdout().expect("stdout was requested");
        let entry =
            super::remote_snapshot_entry(saved.size, KeepAlive::new(stdout, Box::new(p)), facts);
        Ok((entry, cleanup))
    }

    fn cleanup(&self, pod: EtcdPod, saved: Saved) -> Cleanup {
        let cluster = Cluster {
            client: self.client.clone(),
            target: self.target.clone(),
        };
        Box::pin(async move {
            if let Err(e) = cluster.run(&pod, &etcdctl::cleanup_script(&saved)).await {
                tracing::warn!(
                    "could not remove {} in pod {}/{} ({e}); remove it by hand",
                    saved.dir,
                    pod.namespace,
                    pod.name
                );
            }
        })
    }

    /// Port-forwards to `port` of the pod through the API server (no request is made
    /// until [`PodForward::open`]).
    pub fn forward(&self, pod: &EtcdPod, port: u16) -> PodForward {
        PodForward {
            pods: Api::namespaced(self.client.clone(), &pod.namespace),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            port,
        }
    }

    /// The address of the control-plane node: the first (by name) of
    /// [`Cluster::control_plane_addresses`]; the other nodes' addresses do not matter.
    ///
    /// # Errors
    /// As [`Cluster::control_plane_addresses`], for that node.
    pub async fn control_plane_address(&self) -> Result<(String, String), SourceError> {
        address_of(&self.control_plane_nodes().await?[0])
    }

    /// Every control-plane node, by name: `(name, address)` of each node labelled
    /// control-plane or master, its ExternalIP, else its InternalIP. Never empty.
    ///
    /// # Errors
    /// [`SourceError::Kube`] when no node has the role, or one has no address.
    pub async fn control_plane_addresses(&self) -> Result<Vec<(String, String)>, SourceError> {
        self.control_plane_nodes()
            .await?
            .iter()
            .map(address_of)
            .collect()
    }

    /// The nodes labelled control-plane or master, by name, each once. Never empty.
    async fn control_plane_nodes(&self) -> Result<Vec<Node>, SourceError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut found = vec![];
        for role in [
            "node-role.kubernetes.io/control-plane",
            "node-role.kubernetes.io/master",
        ] {
            let list = nodes
                .list(&ListParams::default().labels(role))
                .await
                .map_err(|e| kube_err("listing nodes", &e, "check --kubeconfig"))?;
            found.extend(list.items);
        }
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        // A node with both labels is listed twice.
        found.dedup_by(|a, b| a.metadata.name == b.metadata.name);
        if found.is_empty() {
            return Err(fail(
                "no node has the control-plane or master role".into(),
                "use the admin cluster's kubeconfig, or give the node with --ssh USER@HOST",
            ));
        }
        Ok(found)
    }

    /// The node SSH private key from secret `kube-system/sshkeys`, field `vsphere_tmp`.
    ///
    /// # Errors
    /// [`SourceError::Kube`] when the secret or the field is missing.
    pub async fn ssh_key(&self) -> Result<Zeroizing<Vec<u8>>, SourceError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "kube-system");
        let secret = secrets
            .get_opt("sshkeys")
            .await
            .map_err(|e| {
                kube_err(
                    "reading secret kube-system/sshkeys",
                    &e,
                    "check --kubeconfig",
                )
            })?
            .ok_or_else(|| {
                fail(
                    "secret kube-system/sshkeys does not exist".into(),
                    "use the admin cluster's kubeconfig, or give the node's key with --ssh-key",
                )
            })?;
        let mut data = secret.data.unwrap_or_default();
        let key = data.remove("vsphere_tmp").ok_or_else(|| {
            let fields: Vec<_> = data.keys().cloned().collect();
            fail(
                format!(
                    "secret kube-system/sshkeys has no field vsphere_tmp (it has: {})",
                    if fields.is_empty() {
                        "none".into()
                    } else {
                        fields.join(", ")
                    }
                ),
                "give the node's key with --ssh-key",
            )
        })?;
        Ok(Zeroizing::new(key.0))
    }
}

/// What the API server says on a forwarded port's error channel: why the kubelet could not
/// connect to the port inside the pod; `None` when the forward ended without a word.
pub type ForwardError = std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>;

/// One port of a pod, reached through the API server's port-forward (a websocket per
/// connection); cheap to clone, so a client can open a new forward whenever it reconnects.
#[derive(Clone)]
pub struct PodForward {
    pods: Api<Pod>,
    namespace: String,
    pod: String,
    port: u16,
}

impl PodForward {
    /// Opens one forwarded connection: its byte stream, and what its error channel says.
    /// The forward ends when the stream is dropped.
    ///
    /// # Errors
    /// [`SourceError::Kube`]: a forbidden port-forward names the resource and the verbs to
    /// grant; anything else the API server's answer.
    pub async fn open(&self) -> Result<(tokio::io::DuplexStream, ForwardError), SourceError> {
        let what = format!(
            "port-forward to pod {}/{} port {}",
            self.namespace, self.pod, self.port
        );
        let mut pf = self
            .pods
            .portforward(&self.pod, &[self.port])
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 403 => fail(
                    format!("{what}: forbidden ({})", s.message),
                    &format!(
                        "let the kubeconfig's user get and create pods/portforward in namespace {} (a Role rule: apiGroups [\"\"], resources [\"pods/portforward\"], verbs [\"get\", \"create\"]), or take the snapshot with --etcd-via-ssh",
                        self.namespace
                    ),
                ),
                other => kube_err(
                    &what,
                    other,
                    "check that the pod is running and that the API server allows port-forwarding",
                ),
            })?;
        let lost = || fail(format!("{what}: the forwarder gave no stream"), "try again");
        let stream = pf.take_stream(self.port).ok_or_else(lost)?;
        let error = pf.take_error(self.port).ok_or_else(lost)?;
        // The forwarder's task runs on by itself until the stream is dropped.
        Ok((stream, Box::pin(error)))
    }
}

#[cfg(test)]
mod tests;
