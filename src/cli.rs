//! The command line as clap parses it: flags, their `CPVAULT_*` variables and their help.
//! It only describes; merging with the config file and checking happen in the commands.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::plan::retention::Policy;
pub use crate::sources::settings::{NodeEtcdctlFlags, SourceFlags, SshFlags};

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

/// `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity to FILE (mode 0600, refuses to overwrite) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
}

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
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

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
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
    /// Only this cluster's backups.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// The retention rules (declared with their config keys in [`Policy`]).
    #[command(flatten)]
    pub policy: Policy,
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
}
