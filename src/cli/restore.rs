//! `cpvault restore`'s arguments: the backup and its keys, the target (a node over SSH,
//! found through the cluster, or a local dir), the node's layout and the safety switches.
//! Describes only; the plan and its checks are the restore's.

use std::path::PathBuf;

use clap::Args;

use super::{IdentityArgs, StoreArgs, TrustArgs};
use crate::sources::settings::{NodeEtcdctlFlags, SshFlags};

/// `restore`.
#[derive(Debug, Args)]
#[command(
    after_help = "Steps: preflight, verify, stage, stop-control-plane, [shrink-to-one-member,] \
move-aside, restore-snapshot, pki, [encryption-config, manifests, admin-conf: when the backup \
holds the node's recovery kit], start-control-plane, wait-ready, [wait-quorum: several nodes,] \
kubeconfig, cleanup. \
Several nodes (HA: one --ssh per etcd member) run as one plan: preflight on each, one \
verify, then each step on every node before the next (stop all, move aside on all, restore on \
each with its own member name and peer URL, the shared --initial-cluster and one new \
--initial-cluster-token, start all), wait-ready on each, and wait-quorum (every member \
healthy, one leader) before the kubeconfig is fetched from the first node. The node layout \
flags (--manifests-dir, --etcd-data-dir, --node-pki-dir, --admin-conf, --staging-dir, \
--stopped-check, --ready-check) apply to every node when given once, or are given once per \
--ssh, paired by position; a node on another SSH port is --ssh USER@HOST:PORT. \
Preflight refuses a node whose etcd.yaml (or the backup's member list) names etcd members \
that are not restored (a split): give every member's node, or use --to-dir DIR --members \
NAME=PEER_URL,… or --shrink-to-one-member. Any failure after \
the first change, on any node, undoes the completed steps of every node in reverse order. The old data dir and PKI are \
kept (<data dir>/member.before-<restore id>, <pki dir>.before-<restore id>) and never deleted, \
and so are the files the kit replaces (<manifests dir's parent>/<restore id>.kit-before/). --dry-run prints the \
plan with every command it would run. The node keeps a journal of the completed steps \
(<staging dir>/<restore id>.journal, 0600; each node its own steps) until the restore or \
its rollback ends; if cpvault is killed or loses the node, `restore --rollback <restore id>` \
with the same SSH and node flags (every --ssh) undoes what each node's journal lists. With --profile gke-user (a GKE on VMware user cluster's etcd, through the admin cluster's API): preflight, verify, scale-down, restore-pod, stage, restore-snapshot, swap-data-dir, cleanup, remove-restore-pod, scale-up, wait-ready, restart-apiserver (unless --apiserver-pod ''; a failure there is not rolled back); the old member/ is kept on the volume as member.before-<restore id>, and the journal is an annotation on the StatefulSet."
)]
pub struct RestoreArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Keys.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The backup: <cluster>/<id>, or <cluster>/latest.
    #[arg(value_name = "REF", required_unless_present = "rollback")]
    pub reference: Option<String>,
    /// Undo an interrupted restore from its journal on the node: the restore id it printed
    /// when it started (cpvault-restore-…). Takes the same SSH and node flags.
    #[arg(
        long,
        value_name = "RESTORE_ID",
        conflicts_with_all = ["reference", "to_dir"]
    )]
    pub rollback: Option<String>,
    /// Restore locally instead: an etcd data dir in DIR/etcd and the PKI in DIR/pki.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "nodes",
        help_heading = "Local restore"
    )]
    pub to_dir: Option<PathBuf>,
    /// --name for `etcdctl snapshot restore` with --to-dir.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        help_heading = "Local restore"
    )]
    pub name: String,
    /// --initial-cluster with --to-dir [default: NAME=http://localhost:2380].
    #[arg(long, value_name = "NAME=URL", help_heading = "Local restore")]
    pub initial_cluster: Option<String>,
    /// --initial-advertise-peer-urls with --to-dir [default: http://localhost:2380].
    #[arg(long, value_name = "URL", help_heading = "Local restore")]
    pub initial_advertise_peer_urls: Option<String>,
    /// With --to-dir: one data dir per member of a multi-member cluster, DIR/NAME, all from
    /// the same snapshot with one new --initial-cluster-token, so that an etcd started on each
    /// (with its own --name and peer URL) forms one cluster; e.g.
    /// `a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,c=https://10.0.0.3:2380`.
    #[arg(
        long,
        value_name = "NAME=PEER_URL,…",
        requires = "to_dir",
        conflicts_with_all = ["name", "initial_cluster", "initial_advertise_peer_urls"],
        help_heading = "Local restore"
    )]
    pub members: Option<String>,
    /// The control-plane node restored onto, USER@HOST or USER@HOST:PORT; repeatable: give
    /// every etcd member's node of an HA control plane, and they are restored as one cluster
    /// in one plan.
    #[arg(
        long = "ssh",
        env = "CPVAULT_SSH",
        value_name = "USER@HOST[:PORT]",
        help_heading = "SSH"
    )]
    pub nodes: Vec<String>,
    /// SSH to the node(s).
    #[command(flatten)]
    pub ssh: SshFlags,
    /// Find the nodes (and their key in kube-system/sshkeys) through this cluster's API when
    /// --ssh is not given: every control-plane node, by name (the node layout flags given
    /// once per node pair with them in that order); its [clusters.NAME] section supplies
    /// settings.
    #[arg(
        long,
        env = "CPVAULT_CLUSTER",
        value_name = "NAME",
        help_heading = "Finding the node"
    )]
    pub cluster: Option<String>,
    /// kubeconfig of the admin cluster, to find the control-plane nodes while its API server
    /// still answers.
    #[arg(long, value_name = "FILE", help_heading = "Finding the node")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    #[arg(long, value_name = "NAME", help_heading = "Finding the node")]
    pub context: Option<String>,
    /// `gke-user`: restore a GKE on VMware user cluster's etcd (the StatefulSet in
    /// --namespace of the admin cluster --kubeconfig leads to) through the API, instead of a
    /// node over SSH.
    #[arg(
        long,
        value_enum,
        value_name = "PROFILE",
        help_heading = "User cluster"
    )]
    pub profile: Option<crate::sources::kube::Profile>,
    /// The user cluster's namespace in the admin cluster (its name).
    #[arg(long, value_name = "NS", help_heading = "User cluster")]
    pub namespace: Option<String>,
    /// The user cluster's etcd StatefulSet.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "kube-etcd",
        help_heading = "User cluster"
    )]
    pub statefulset: String,
    /// Its etcd container (whose command gives --data-dir and the member flags).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "kube-etcd",
        help_heading = "User cluster"
    )]
    pub etcd_container: String,
    /// The user cluster's kube-apiserver pod in the same namespace, restarted at the end
    /// (deleted, and its controller's new pod waited for until Ready) so its watch cache
    /// drops revisions the restored etcd never had ('' to leave it alone).
    #[arg(
        long,
        value_name = "POD",
        default_value = "kube-apiserver-0",
        help_heading = "User cluster"
    )]
    pub apiserver_pod: String,
    /// Image of the restore pod [default: the etcd container's]. It needs sh, cat, mv,
    /// chown, stat, sha256sum and etcdutl or etcdctl: give one when the etcd image is
    /// distroless.
    #[arg(long, value_name = "IMAGE", help_heading = "User cluster")]
    pub restore_pod_image: Option<String>,
    /// etcdctl on the node.
    #[command(flatten)]
    pub node: NodeEtcdctlFlags,
    /// Static-pod manifests dir on the node (once for all nodes, or once per --ssh).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/kubernetes/manifests",
        help_heading = "Node layout"
    )]
    pub manifests_dir: Vec<String>,
    /// etcd data dir on the node (once, or once per --ssh).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/etcd",
        help_heading = "Node layout"
    )]
    pub etcd_data_dir: Vec<String>,
    /// PKI dir on the node (once, or once per --ssh).
    #[arg(
        long = "node-pki-dir",
        value_name = "DIR",
        default_value = "/etc/kubernetes/pki",
        help_heading = "Node layout"
    )]
    pub pki_dir: Vec<String>,
    /// Admin kubeconfig on the node, fetched at the end from the first node (once, or once
    /// per --ssh).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kubernetes/admin.conf",
        help_heading = "Node layout"
    )]
    pub admin_conf: Vec<String>,
    /// Where the 0700 staging dir is made on the node (once, or once per --ssh).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/tmp",
        help_heading = "Node layout"
    )]
    pub staging_dir: Vec<String>,
    /// Shell command on the node that exits 0 once etcd and kube-apiserver have stopped
    /// [default: no etcd or kube-apiserver container in `crictl ps`] (once, or once per --ssh).
    #[arg(long, value_name = "CMD", help_heading = "Node layout")]
    pub stopped_check: Vec<String>,
    /// Shell command on the node that exits 0 once the control plane serves again
    /// [default: etcdctl endpoint health, then kube-apiserver /readyz on 127.0.0.1:6443]
    /// (once, or once per --ssh).
    #[arg(long, value_name = "CMD", help_heading = "Node layout")]
    pub ready_check: Vec<String>,
    /// Seconds to wait for the control plane to stop, and to be ready again.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        help_heading = "Node layout"
    )]
    pub wait_timeout: u64,
    /// Where to write the node's admin kubeconfig (0600; never overwritten)
    /// [default: ./<cluster>-admin.conf].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig_out: Option<PathBuf>,
    /// Restore even though the node's CA (pki/ca.crt) differs from the archive's.
    #[arg(long)]
    pub force_different_cluster: bool,
    /// Restore a snapshot taken from a newer etcd minor version than the etcd that will run
    /// it (the node's etcd image or `etcd --version`; with --to-dir the local etcd).
    #[arg(long)]
    pub force_version: bool,
    /// Restore this node as a cluster of one member although its etcd.yaml names others:
    /// the plan rewrites its etcd.yaml (--initial-cluster naming only this member,
    /// --initial-cluster-state=new), keeping the old one, which a rollback puts back. The
    /// other members must then be reset and re-joined by hand. Stop them first: cpvault does
    /// not check that they are down.
    #[arg(long, conflicts_with = "to_dir")]
    pub shrink_to_one_member: bool,
    /// Restore even though certificates in the backup have expired (preflight names them);
    /// renew them on the node afterwards. With --to-dir expired certificates only warn.
    #[arg(long)]
    pub force_expired: bool,
    /// Print the plan (every step and command) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before changing the node.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Restore a backup whose author is not checked (no --allowed-signers given). Anyone
    /// who can write to the store can build a backup that decrypts with your key.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Restore a snapshot that has no etcd sha256 trailer (e.g. one copied from a data dir's
    /// `member/snap/db`) with `snapshot restore --skip-hash-check`; without it such a backup is
    /// refused before anything changes.
    #[arg(long)]
    pub skip_hash_check: bool,
}
