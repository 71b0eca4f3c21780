//! The command line as clap parses it: flags, their `CPVAULT_*` variables and their help.
//! It only describes; merging with the config file and checking happen in the commands.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  cpvault keygen -o ~/.config/cpvault/key.txt          # prints the public recipient age1…
  cpvault backup --store /backups --cluster admin -r age1… \\
      --kubeconfig admin.kubeconfig --profile gke-admin   # etcd by exec, PKI over SSH, all found
  cpvault backup --store /backups --cluster admin -r age1… \\
      --etcd-endpoint https://10.0.0.5:2379 --etcd-cacert ca.crt --etcd-cert c.crt --etcd-key c.key \\
      --ssh ubuntu@10.0.0.5                                # etcd over gRPC, PKI over SSH
  cpvault backup --store /backups --cluster lab -r age1… \\
      --etcd-snapshot-file snapshot.db --pki-dir /etc/kubernetes/pki
  cpvault list --store /backups
  cpvault verify --store /backups --latest -i key.txt   # deep: every layer
  cpvault extract --store /backups admin/latest -i key.txt --to ./restore

Every flag can also come from a CPVAULT_* variable or the config file (TOML; see README).
Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed.";

/// cpvault: encrypted, verified backups of a Kubernetes control plane (etcd + PKI).
#[derive(Debug, Parser)]
#[command(name = "cpvault", version, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML). Default: ~/.config/cpvault/config.toml when it exists.
    #[arg(long, global = true, env = "CPVAULT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: human text, or JSON for scripts.
    #[arg(long, global = true, env = "CPVAULT_OUTPUT", value_enum)]
    pub output: Option<OutputFormat>,
    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars or summaries, only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// For scripts: one JSON document on stdout.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new age identity; prints its public recipient.
    Keygen(KeygenArgs),
    /// Back up an etcd snapshot, PKI and files into one encrypted archive in the store.
    Backup(Box<BackupArgs>),
    /// List committed backups, newest first.
    List(ListArgs),
    /// Show one backup's manifest.
    Show(ShowArgs),
    /// Check backups: ciphertext size and sha256 without a key; every layer with -i.
    Verify(VerifyArgs),
    /// Decrypt a backup into a new directory, verifying every byte.
    Extract(ExtractArgs),
    /// Remove old backups by a retention policy (restic's rules), and abandoned uploads.
    Prune(PruneArgs),
    /// Restore a backup onto a control-plane node over SSH (planned, verified, rolled back on
    /// failure), or into a local etcd data dir with --to-dir.
    Restore(Box<RestoreArgs>),
    /// Copy backups to another store, checking every byte's sha256 on the way.
    Copy(CopyArgs),
}

/// Where backups live.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: a directory path, file:///abs/path, s3://bucket/prefix (AWS_* settings),
    /// gs://bucket/prefix (GOOGLE_*), az://container/prefix (AZURE_*), or
    /// memory:// (for tests).
    #[arg(long, env = "CPVAULT_STORE", value_name = "URL")]
    pub store: Option<String>,
}

/// Keys that open archives.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// Identity file: age key (cpvault keygen / age-keygen) or unencrypted SSH private key.
    /// A passphrase-encrypted archive opens with CPVAULT_PASSPHRASE instead.
    #[arg(
        short = 'i',
        long = "identity",
        env = "CPVAULT_IDENTITY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub identities: Vec<PathBuf>,
}

/// Whose backups are trusted (design §8).
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// OpenSSH allowed_signers file (`NAME ssh-ed25519 AAAA…` per line, as git uses). With
    /// it, only backups whose signature verifies under one of its keys are trusted: others
    /// fail verify, and are never extracted, restored, picked as latest or kept by prune.
    #[arg(long, env = "CPVAULT_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,
}

/// The key that signs new backups.
#[derive(Debug, Clone, Args)]
pub struct SigningArgs {
    /// Sign the outer manifest with this unencrypted OpenSSH ed25519 private key
    /// (`cpvault keygen --signing -o FILE`); the signature is stored as
    /// <cluster>/<id>.manifest.sig and checks with `ssh-keygen -Y verify -n cpvault`.
    #[arg(long, env = "CPVAULT_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
}

/// `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key to FILE (mode 0600, refuses to overwrite) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Make an OpenSSH ed25519 signing key (for --signing-key) instead of an age identity;
    /// prints its public key line for the allowed_signers file. Needs -o.
    #[arg(long, requires = "output_file")]
    pub signing: bool,
    /// With --signing: the key's comment, shown in the public key line.
    #[arg(
        long,
        value_name = "TEXT",
        requires = "signing",
        default_value = "cpvault"
    )]
    pub comment: String,
}

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Signing.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Cluster name: the backup is stored as <cluster>/<id>.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
    /// Public recipient to encrypt to (age1… or "ssh-ed25519 …"/"ssh-rsa …"); repeatable.
    /// Without any, CPVAULT_PASSPHRASE encrypts with a passphrase.
    #[arg(
        short = 'r',
        long = "recipient",
        env = "CPVAULT_RECIPIENT",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub recipients: Vec<String>,
    /// File of recipients, one per line; repeatable.
    #[arg(
        short = 'R',
        long = "recipients-file",
        env = "CPVAULT_RECIPIENTS_FILE",
        value_name = "FILE"
    )]
    pub recipients_files: Vec<PathBuf>,
    /// Sources.
    #[command(flatten)]
    pub sources: SourceFlags,
    /// Back up every cluster of the config file's `[clusters.NAME]` sections, one archive
    /// each, two at a time; exits 1 if any failed.
    #[arg(long, conflicts_with = "cluster")]
    pub all: bool,
    /// Tag the backup (KEY=VALUE); repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// zstd compression level.
    #[arg(long, env = "CPVAULT_ZSTD_LEVEL", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: Option<i32>,
    /// zstd worker threads (default: one per core; 0 = compress on one thread).
    #[arg(long, value_name = "N")]
    pub zstd_threads: Option<u32>,
    /// Upload part size in MiB (memory used is about part size × concurrency).
    #[arg(long, value_name = "MIB", default_value_t = 8, value_parser = clap::value_parser!(u64).range(5..=512))]
    pub part_size_mib: u64,
    /// Upload parts in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub upload_concurrency: u64,
}

/// Where a backup's content comes from. Flags win over `[clusters.NAME]`, which wins over
/// `[sources]` in the config file.
#[derive(Debug, Default, Args)]
pub struct SourceFlags {
    /// An existing etcd snapshot (from `etcdctl snapshot save`).
    #[arg(long, value_name = "FILE", help_heading = "Sources")]
    pub etcd_snapshot_file: Option<PathBuf>,
    /// A local PKI directory (e.g. /etc/kubernetes/pki), stored with file modes.
    #[arg(long, value_name = "DIR", help_heading = "Sources")]
    pub pki_dir: Option<PathBuf>,
    /// An extra file to include (e.g. a kubeconfig); repeatable.
    #[arg(long = "file", value_name = "PATH", help_heading = "Sources")]
    pub files: Vec<PathBuf>,
    /// Snapshot etcd directly over gRPC (Maintenance.Snapshot) at this client URL;
    /// repeatable, tried in order until one answers.
    #[arg(
        long = "etcd-endpoint",
        env = "CPVAULT_ETCD_ENDPOINT",
        value_name = "URL",
        value_delimiter = ',',
        help_heading = "etcd over gRPC"
    )]
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) of etcd's server certificate.
    #[arg(
        long,
        env = "CPVAULT_ETCD_CACERT",
        value_name = "FILE",
        help_heading = "etcd over gRPC"
    )]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's mutual TLS, e.g. healthcheck-client.crt.
    #[arg(
        long,
        env = "CPVAULT_ETCD_CERT",
        value_name = "FILE",
        help_heading = "etcd over gRPC"
    )]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) matching --etcd-cert.
    #[arg(
        long,
        env = "CPVAULT_ETCD_KEY",
        value_name = "FILE",
        help_heading = "etcd over gRPC"
    )]
    pub etcd_key: Option<PathBuf>,
    /// kubeconfig of the cluster holding etcd (for GKE user clusters: the admin cluster's).
    /// etcdctl runs inside the etcd pod by exec; with --profile gke-admin the node's PKI is
    /// also fetched over SSH, the node and its key found through the API.
    #[arg(
        long,
        env = "CPVAULT_KUBECONFIG",
        value_name = "FILE",
        help_heading = "Kubernetes"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context (default: its current context).
    #[arg(
        long,
        env = "CPVAULT_CONTEXT",
        value_name = "NAME",
        help_heading = "Kubernetes"
    )]
    pub context: Option<String>,
    /// What kind of cluster: where etcd runs and which certificates etcdctl uses.
    #[arg(long, env = "CPVAULT_PROFILE", value_enum, help_heading = "Kubernetes")]
    pub profile: Option<crate::sources::kube::Profile>,
    /// The user cluster's namespace in the admin cluster (--profile gke-user).
    #[arg(
        long,
        env = "CPVAULT_NAMESPACE",
        value_name = "NS",
        help_heading = "Kubernetes"
    )]
    pub namespace: Option<String>,
    /// SSH to the node.
    #[command(flatten)]
    pub ssh: SshFlags,
    /// The PKI directory on the node [default: /etc/kubernetes/pki].
    #[arg(long, value_name = "DIR", help_heading = "SSH")]
    pub ssh_pki_dir: Option<String>,
    /// Take the etcd snapshot on the node over SSH with etcdctl (saved to a private temp
    /// dir there, streamed back, removed).
    #[arg(long, help_heading = "SSH")]
    pub ssh_etcd: bool,
    /// etcdctl on the node or in the pod.
    #[command(flatten)]
    pub node: NodeEtcdctlFlags,
}

/// How to reach the control-plane node over SSH (backup and restore).
#[derive(Debug, Default, Clone, Args)]
pub struct SshFlags {
    /// The control-plane node, USER@HOST: for backup its PKI is read with `tar`
    /// over SSH; for restore it is the node restored onto.
    #[arg(
        long,
        env = "CPVAULT_SSH",
        value_name = "USER@HOST",
        help_heading = "SSH"
    )]
    pub ssh: Option<String>,
    /// SSH user for a node found through --kubeconfig [default: ubuntu].
    #[arg(
        long,
        env = "CPVAULT_SSH_USER",
        value_name = "USER",
        help_heading = "SSH"
    )]
    pub ssh_user: Option<String>,
    /// SSH private key (default: ssh's own; with --profile gke-admin: kube-system/sshkeys).
    #[arg(
        long,
        env = "CPVAULT_SSH_KEY",
        value_name = "FILE",
        help_heading = "SSH"
    )]
    pub ssh_key: Option<PathBuf>,
    /// SSH port.
    #[arg(
        long,
        env = "CPVAULT_SSH_PORT",
        value_name = "PORT",
        help_heading = "SSH"
    )]
    pub ssh_port: Option<u16>,
    /// Jump host, USER@HOST[:PORT] (ssh -J).
    #[arg(
        long,
        env = "CPVAULT_SSH_JUMP",
        value_name = "USER@HOST",
        help_heading = "SSH"
    )]
    pub ssh_jump: Option<String>,
    /// known_hosts file to check the node's host key against (default: ssh's own).
    #[arg(
        long,
        env = "CPVAULT_SSH_KNOWN_HOSTS",
        value_name = "FILE",
        help_heading = "SSH"
    )]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Trust the node's host key if it is not known yet and record it (accept-new); a
    /// changed key is still refused. Host keys are never ignored.
    #[arg(long, help_heading = "SSH")]
    pub ssh_accept_new: bool,
    /// Run node commands under `sudo -n`: auto = unless the SSH user is root.
    #[arg(long, value_enum, help_heading = "SSH")]
    pub ssh_sudo: Option<crate::sources::ssh::SudoMode>,
}

/// How etcdctl runs on the node or in the etcd pod, and which certificates it uses there.
#[derive(Debug, Default, Clone, Args)]
pub struct NodeEtcdctlFlags {
    /// How etcdctl is run on the node or in the pod [default: etcdctl].
    #[arg(
        long,
        value_name = "CMD",
        help_heading = "etcdctl on the node or in the pod"
    )]
    pub node_etcdctl: Option<String>,
    /// etcd's client URL as seen there [default: https://127.0.0.1:2379].
    #[arg(
        long,
        value_name = "URL",
        help_heading = "etcdctl on the node or in the pod"
    )]
    pub node_etcd_endpoint: Option<String>,
    /// CA certificate path there [default: the profile's, else kubeadm's].
    #[arg(
        long,
        value_name = "PATH",
        help_heading = "etcdctl on the node or in the pod"
    )]
    pub node_etcd_cacert: Option<String>,
    /// Client certificate path there.
    #[arg(
        long,
        value_name = "PATH",
        help_heading = "etcdctl on the node or in the pod"
    )]
    pub node_etcd_cert: Option<String>,
    /// Client key path there.
    #[arg(
        long,
        value_name = "PATH",
        help_heading = "etcdctl on the node or in the pod"
    )]
    pub node_etcd_key: Option<String>,
}

impl SourceFlags {
    /// The flags as a layer of source settings.
    pub fn to_sources(&self) -> crate::config::Sources {
        crate::config::Sources {
            etcd_snapshot_file: self.etcd_snapshot_file.clone(),
            pki_dir: self.pki_dir.clone(),
            files: self.files.clone(),
            etcd_endpoints: self.etcd_endpoints.clone(),
            etcd_cacert: self.etcd_cacert.clone(),
            etcd_cert: self.etcd_cert.clone(),
            etcd_key: self.etcd_key.clone(),
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            profile: self.profile,
            namespace: self.namespace.clone(),
            ssh: self.ssh.ssh.clone(),
            ssh_user: self.ssh.ssh_user.clone(),
            ssh_key: self.ssh.ssh_key.clone(),
            ssh_port: self.ssh.ssh_port,
            ssh_jump: self.ssh.ssh_jump.clone(),
            ssh_known_hosts: self.ssh.ssh_known_hosts.clone(),
            ssh_accept_new: self.ssh.ssh_accept_new.then_some(true),
            ssh_sudo: self.ssh.ssh_sudo,
            ssh_pki_dir: self.ssh_pki_dir.clone(),
            ssh_etcd: self.ssh_etcd.then_some(true),
            node_etcdctl: self.node.node_etcdctl.clone(),
            node_etcd_endpoint: self.node.node_etcd_endpoint.clone(),
            node_etcd_cacert: self.node.node_etcd_cacert.clone(),
            node_etcd_cert: self.node.node_etcd_cert.clone(),
            node_etcd_key: self.node.node_etcd_key.clone(),
        }
    }
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Only this cluster's backups.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
}

/// `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The backup: <cluster>/<id>, or <cluster>/latest.
    #[arg(value_name = "REF")]
    pub reference: String,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Keys.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Backups to verify: <cluster>/<id> or <cluster>/latest.
    #[arg(value_name = "REF")]
    pub references: Vec<String>,
    /// Verify every committed backup (of --cluster, if given).
    #[arg(long, conflicts_with_all = ["references", "latest"])]
    pub all: bool,
    /// Verify the newest backup of each cluster (or of --cluster).
    #[arg(long, conflicts_with = "references")]
    pub latest: bool,
    /// With --all/--latest: only this cluster.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
}

/// `extract`.
#[derive(Debug, Args)]
pub struct ExtractArgs {
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
    #[arg(value_name = "REF")]
    pub reference: String,
    /// New directory to write into; it must not exist yet (or be empty).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

/// `copy`.
#[derive(Debug, Args)]
#[command(
    after_help = "The archive streams from --store to --to; its size and sha256 must match \
the manifest before the upload completes, and the manifest is created last, so a failed copy \
leaves nothing listed at the target. Backups already at the target are skipped."
)]
pub struct CopyArgs {
    /// The source store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust: with allowed signers, only trusted backups are copied.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Signing: backups copied without a signature get one from this key (their archive's
    /// sha256 is checked on the way); signed ones keep their own.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// The target store URL (same forms as --store).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Backups to copy: <cluster>/<id> or <cluster>/latest.
    #[arg(value_name = "REF")]
    pub references: Vec<String>,
    /// Every committed backup (of --cluster, if given).
    #[arg(long)]
    pub all: bool,
    /// With --all: only this cluster.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
}

/// `restore`.
#[derive(Debug, Args)]
#[command(
    after_help = "Steps: preflight, verify, stage, stop-control-plane, move-aside, \
restore-snapshot, pki, start-control-plane, wait-ready, kubeconfig, cleanup. Any failure after \
the first change undoes the completed steps in reverse order. The old data dir and PKI are \
kept (<data dir>/member.before-<restore id>, <pki dir>.before-<restore id>) and never deleted. --dry-run prints the \
plan with every command it would run."
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
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Restore locally instead: an etcd data dir in DIR/etcd and the PKI in DIR/pki.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "ssh",
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
    /// SSH to the node.
    #[command(flatten)]
    pub ssh: SshFlags,
    /// Find the node (and its key in kube-system/sshkeys) through this cluster's API, as
    /// backup does, when --ssh is not given; its [clusters.NAME] section supplies settings.
    #[arg(
        long,
        env = "CPVAULT_CLUSTER",
        value_name = "NAME",
        help_heading = "Finding the node"
    )]
    pub cluster: Option<String>,
    /// kubeconfig of the admin cluster, to find the node while its API server still answers.
    #[arg(long, value_name = "FILE", help_heading = "Finding the node")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    #[arg(long, value_name = "NAME", help_heading = "Finding the node")]
    pub context: Option<String>,
    /// etcdctl on the node.
    #[command(flatten)]
    pub node: NodeEtcdctlFlags,
    /// Static-pod manifests dir on the node.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/kubernetes/manifests",
        help_heading = "Node layout"
    )]
    pub manifests_dir: String,
    /// etcd data dir on the node.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/etcd",
        help_heading = "Node layout"
    )]
    pub etcd_data_dir: String,
    /// PKI dir on the node.
    #[arg(
        long = "node-pki-dir",
        value_name = "DIR",
        default_value = "/etc/kubernetes/pki",
        help_heading = "Node layout"
    )]
    pub pki_dir: String,
    /// Admin kubeconfig on the node, fetched at the end.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kubernetes/admin.conf",
        help_heading = "Node layout"
    )]
    pub admin_conf: String,
    /// Where the 0700 staging dir is made on the node.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/tmp",
        help_heading = "Node layout"
    )]
    pub staging_dir: String,
    /// Shell command on the node that exits 0 once etcd and kube-apiserver have stopped
    /// [default: no etcd or kube-apiserver container in `crictl ps`].
    #[arg(long, value_name = "CMD", help_heading = "Node layout")]
    pub stopped_check: Option<String>,
    /// Shell command on the node that exits 0 once the control plane serves again
    /// [default: etcdctl endpoint health, then kube-apiserver /readyz on 127.0.0.1:6443].
    #[arg(long, value_name = "CMD", help_heading = "Node layout")]
    pub ready_check: Option<String>,
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
}

/// `prune`.
#[derive(Debug, Args)]
#[command(
    after_help = "Rules are restic's and are ORed; each period keeps its newest backup; \
the newest backup of every cluster is always kept; with no rule at all nothing is removed. \
Without flags, the policy comes from [retention] and [clusters.NAME.retention] in the config file."
)]
pub struct PruneArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Only this cluster's backups.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Keep the newest N backups (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest backup of each of the last N hours that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest backup of each of the last N days that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest backup of each of the last N months that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest backup of each of the last N years that have one.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every backup within DURATION (e.g. 7d, 1y6m, 36h) of the newest one.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<crate::plan::retention::Duration>,
    /// Keep the newest backup of each hour within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<crate::plan::retention::Duration>,
    /// Keep the newest backup of each day within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<crate::plan::retention::Duration>,
    /// Keep the newest backup of each ISO week within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<crate::plan::retention::Duration>,
    /// Keep the newest backup of each month within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<crate::plan::retention::Duration>,
    /// Keep the newest backup of each year within DURATION.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<crate::plan::retention::Duration>,
    /// Keep backups with these tags (KEY=VALUE or KEY; comma-separated: all must match); repeatable.
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Time zone for hour/day/week/month/year buckets (IANA name).
    #[arg(
        long,
        value_name = "ZONE",
        default_value = "UTC",
        env = "CPVAULT_TIMEZONE"
    )]
    pub timezone: chrono_tz::Tz,
    /// Archives without a manifest are removed once older than this many hours (younger ones
    /// may be uploads in progress).
    #[arg(long, value_name = "HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub grace_hours: u32,
    /// Also remove manifests whose archive object is missing (reported otherwise).
    #[arg(long)]
    pub remove_broken: bool,
    /// With --allowed-signers: also remove backups that are not trusted (reported and left
    /// in place otherwise). They never count toward the keep rules.
    #[arg(long, requires = "allowed_signers")]
    pub remove_untrusted: bool,
}
