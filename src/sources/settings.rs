//! The source settings, declared once: where a backup's etcd snapshot, PKI and files come
//! from, and how to reach the node. Each setting is one field below — its flag, `CPVAULT_*`
//! variable and help — and the same name is its key in the config file's `[sources]` and
//! `[clusters.NAME]` sections, which parse into the flat [`Sources`] layer. Flags win over
//! `[clusters.NAME]`, which wins over `[sources]` ([`Sources::or`]). The groups stand alone
//! too: restore takes [`SshFlags`] and [`NodeEtcdctlFlags`]. This module only describes and
//! merges; deciding what to read is [`super::gather`]'s, opening anything the sources'.

use std::path::PathBuf;

use super::kube::Profile;
use super::ssh::SudoMode;
use crate::layers::layered_settings;

layered_settings! {
    /// Backup sources, as one layer: from the config file (`[sources]`, `[clusters.NAME]`)
    /// or from the flags ([`SourceFlags`]). Every field is optional; [`Sources::or`] layers
    /// them, and unknown keys are refused so a typo never silently changes a backup.
    pub struct Sources;

    /// Where a backup's content comes from. Flags win over `[clusters.NAME]`, which wins over
    /// `[sources]` in the config file.
    pub struct SourceFlags {
        /// Local files.
        local: LocalFlags {
            /// An existing etcd snapshot (from `etcdctl snapshot save`).
            #[arg(long, value_name = "FILE", help_heading = "Sources")]
            etcd_snapshot_file: Option<PathBuf>,
            /// A local PKI directory (e.g. /etc/kubernetes/pki), stored with file modes.
            #[arg(long, value_name = "DIR", help_heading = "Sources")]
            pki_dir: Option<PathBuf>,
            /// An extra file to include (e.g. a kubeconfig); repeatable.
            #[arg(long = "file", value_name = "PATH", help_heading = "Sources")]
            files: Vec<PathBuf>,
        },
        /// etcd over gRPC.
        etcd_grpc: EtcdGrpcFlags {
            /// Snapshot etcd directly over gRPC (Maintenance.Snapshot) at this client URL;
            /// repeatable or comma-separated: give every member's of an HA cluster, and the
            /// snapshot comes from a healthy follower (members that do not answer are skipped).
            #[arg(
                long = "etcd-endpoint",
                env = "CPVAULT_ETCD_ENDPOINT",
                value_name = "URL",
                value_delimiter = ',',
                help_heading = "etcd over gRPC"
            )]
            etcd_endpoints: Vec<String>,
            /// CA certificate (PEM) of etcd's server certificate.
            #[arg(
                long,
                env = "CPVAULT_ETCD_CACERT",
                value_name = "FILE",
                help_heading = "etcd over gRPC"
            )]
            etcd_cacert: Option<PathBuf>,
            /// Client certificate (PEM) for etcd's mutual TLS, e.g. healthcheck-client.crt.
            #[arg(
                long,
                env = "CPVAULT_ETCD_CERT",
                value_name = "FILE",
                help_heading = "etcd over gRPC"
            )]
            etcd_cert: Option<PathBuf>,
            /// Client key (PEM) matching --etcd-cert.
            #[arg(
                long,
                env = "CPVAULT_ETCD_KEY",
                value_name = "FILE",
                help_heading = "etcd over gRPC"
            )]
            etcd_key: Option<PathBuf>,
        },
        /// The cluster's API.
        kube: KubeFlags {
            /// kubeconfig of the cluster holding etcd (for GKE user clusters: the admin cluster's).
            /// etcdctl runs inside the etcd pod by exec (or, with --etcd-via-portforward, gRPC goes
            /// through a port-forward to it); with --profile gke-admin the node's PKI is also
            /// fetched over SSH, the node and its key found through the API.
            #[arg(
                long,
                env = "CPVAULT_KUBECONFIG",
                value_name = "FILE",
                help_heading = "Kubernetes"
            )]
            kubeconfig: Option<PathBuf>,
            /// kubeconfig context (default: its current context).
            #[arg(
                long,
                env = "CPVAULT_CONTEXT",
                value_name = "NAME",
                help_heading = "Kubernetes"
            )]
            context: Option<String>,
            /// What kind of cluster: where etcd runs and which certificates etcdctl uses.
            #[arg(long, env = "CPVAULT_PROFILE", value_enum, help_heading = "Kubernetes")]
            profile: Option<Profile>,
            /// The user cluster's namespace in the admin cluster (--profile gke-user).
            #[arg(
                long,
                env = "CPVAULT_NAMESPACE",
                value_name = "NS",
                help_heading = "Kubernetes"
            )]
            namespace: Option<String>,
            /// Take the etcd snapshot over gRPC through the API server's port-forward to the
            /// etcd pod: works with no shell in the pod and no SSH to the node (distroless
            /// etcd). Needs --etcd-cacert, --etcd-cert and --etcd-key (etcd's CA and a client
            /// pair it trusts, e.g. a copy of the node's pki/etcd/ca.crt and
            /// healthcheck-client.crt/.key; read into memory only) and RBAC get and create on
            /// pods/portforward. No node is reached: add --ssh or --pki-dir for the PKI.
            #[arg(long, help_heading = "Kubernetes")]
            etcd_via_portforward: bool,
            /// The etcd pod's client port to forward to [default: from the etcd container's
            /// --listen-client-urls, a loopback or 0.0.0.0 URL first; else 2379].
            #[arg(long, value_name = "PORT", help_heading = "Kubernetes")]
            etcd_pod_port: Option<u16>,
            /// The name etcd's server certificate must be valid for through the port-forward
            /// [default: the host of the etcd container's --advertise-client-urls].
            #[arg(long, value_name = "NAME", help_heading = "Kubernetes")]
            etcd_server_name: Option<String>,
        },
        /// The control-plane node backup reads over SSH (restore takes several: its own
        /// repeatable `--ssh`).
        ssh_node: SshNodeFlags {
            /// The control-plane node, USER@HOST: its PKI is read with `tar` over SSH.
            #[arg(
                long,
                env = "CPVAULT_SSH",
                value_name = "USER@HOST",
                help_heading = "SSH"
            )]
            ssh: Option<String>,
        },
        /// How to reach the control-plane node(s) over SSH (backup and restore).
        ssh: SshFlags {
            /// SSH user for a node found through --kubeconfig [default: ubuntu].
            #[arg(
                long,
                env = "CPVAULT_SSH_USER",
                value_name = "USER",
                help_heading = "SSH"
            )]
            ssh_user: Option<String>,
            /// SSH private key (default: ssh's own; with --profile gke-admin: kube-system/sshkeys).
            #[arg(
                long,
                env = "CPVAULT_SSH_KEY",
                value_name = "FILE",
                help_heading = "SSH"
            )]
            ssh_key: Option<PathBuf>,
            /// SSH port.
            #[arg(
                long,
                env = "CPVAULT_SSH_PORT",
                value_name = "PORT",
                help_heading = "SSH"
            )]
            ssh_port: Option<u16>,
            /// Jump host, USER@HOST[:PORT] (ssh -J).
            #[arg(
                long,
                env = "CPVAULT_SSH_JUMP",
                value_name = "USER@HOST",
                help_heading = "SSH"
            )]
            ssh_jump: Option<String>,
            /// known_hosts file to check the node's host key against (default: ssh's own).
            #[arg(
                long,
                env = "CPVAULT_SSH_KNOWN_HOSTS",
                value_name = "FILE",
                help_heading = "SSH"
            )]
            ssh_known_hosts: Option<PathBuf>,
            /// Trust the node's host key if it is not known yet and record it (accept-new); a
            /// changed key is still refused. Host keys are never ignored.
            #[arg(long, help_heading = "SSH")]
            ssh_accept_new: bool,
            /// Run node commands under `sudo -n`: auto = unless the SSH user is root.
            #[arg(long, value_enum, help_heading = "SSH")]
            ssh_sudo: Option<SudoMode>,
        },
        /// What backup reads from the node over SSH.
        ssh_backup: SshBackupFlags {
            /// The PKI directory on the node [default: /etc/kubernetes/pki].
            #[arg(long, value_name = "DIR", help_heading = "SSH")]
            ssh_pki_dir: Option<String>,
            /// Take the etcd snapshot on the node over SSH with etcdctl (saved to a private temp
            /// dir there, streamed back, removed).
            #[arg(long, help_heading = "SSH")]
            ssh_etcd: bool,
            /// Take the etcd snapshot over gRPC through the SSH connection to the node's own
            /// etcd: nothing needed on the node but sshd; endpoint and certificates from its
            /// etcd.yaml (or --node-etcd-*), the certificates read with sudo into memory.
            #[arg(long, help_heading = "SSH")]
            etcd_via_ssh: bool,
            /// The static-pod manifests dir on the node: backed up with the PKI, and where
            /// kube-apiserver.yaml names the encryption config and --etcd-via-ssh reads
            /// etcd.yaml [default: /etc/kubernetes/manifests].
            #[arg(long, value_name = "DIR", help_heading = "SSH")]
            ssh_manifests_dir: Option<String>,
            /// The admin kubeconfig on the node, backed up with the PKI
            /// [default: /etc/kubernetes/admin.conf].
            #[arg(long, value_name = "PATH", help_heading = "SSH")]
            ssh_admin_conf: Option<String>,
            /// Back up without the EncryptionConfiguration kube-apiserver names
            /// (--encryption-provider-config); without this, a backup whose encryption config
            /// cannot be read fails. Keep its keys safe elsewhere: a restore needs them.
            #[arg(long, help_heading = "SSH")]
            no_encryption_config: bool,
        },
        /// How etcdctl runs on the node or in the etcd pod, and which certificates it uses there.
        node: NodeEtcdctlFlags {
            /// How etcdctl is run on the node or in the pod [default: etcdctl].
            #[arg(
                long,
                value_name = "CMD",
                help_heading = "etcdctl on the node or in the pod"
            )]
            node_etcdctl: Option<String>,
            /// etcd's client URL as seen there [default: https://127.0.0.1:2379; with
            /// --etcd-via-ssh: a loopback client URL from etcd.yaml, else the advertised one].
            #[arg(
                long,
                value_name = "URL",
                help_heading = "etcdctl on the node or in the pod"
            )]
            node_etcd_endpoint: Option<String>,
            /// CA certificate path there [default: the profile's, else kubeadm's; with
            /// --etcd-via-ssh: etcd.yaml's --trusted-ca-file].
            #[arg(
                long,
                value_name = "PATH",
                help_heading = "etcdctl on the node or in the pod"
            )]
            node_etcd_cacert: Option<String>,
            /// Client certificate path there [default: the profile's; with --etcd-via-ssh:
            /// healthcheck-client.crt next to the CA].
            #[arg(
                long,
                value_name = "PATH",
                help_heading = "etcdctl on the node or in the pod"
            )]
            node_etcd_cert: Option<String>,
            /// Client key path there [default: the profile's; with --etcd-via-ssh:
            /// healthcheck-client.key next to the CA].
            #[arg(
                long,
                value_name = "PATH",
                help_heading = "etcdctl on the node or in the pod"
            )]
            node_etcd_key: Option<String>,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_a_cluster_section_over_sources() {
        let sources: Sources =
            toml::from_str("ssh = \"a@b\"\nssh_port = 2222\nssh_accept_new = true\n").unwrap();
        let cluster: Sources = toml::from_str("ssh_port = 22\nssh_accept_new = false\n").unwrap();
        let mut flags = SourceFlags::default();
        flags.local.files = vec!["x".into()];
        let merged = Sources::from(&flags).or(&cluster.or(&sources));
        assert_eq!(merged.ssh.as_deref(), Some("a@b"));
        assert_eq!(merged.ssh_port, Some(22));
        // A switch left off is no opinion: the cluster section's `false` stands.
        assert_eq!(merged.ssh_accept_new, Some(false));
        assert_eq!(merged.files, vec![PathBuf::from("x")]);
        assert!(toml::from_str::<Sources>("kubeconfg = \"/x\"\n").is_err());
    }
}
