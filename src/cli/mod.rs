//! The command line as clap parses it: flags, their `CPVAULT_*` variables and their help.
//! It only describes; merging with the config file and checking happen in the commands.
//! Argument groups several commands share (store, keys) live in `common.rs`, the source
//! settings, which the config file shares too, in [`crate::sources::settings`]; each large
//! command's arguments have a file of their own, the small commands share `simple.rs`.

mod backup;
mod common;
mod inspect;
mod prune;
mod restore;
mod simple;
mod unattended;

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};

pub use self::backup::BackupArgs;
pub use self::common::{IdentityArgs, MetricsArgs, SigningArgs, StoreArgs, TrustArgs};
pub use self::inspect::{DiffArgs, GetArgs, InspectArgs, ValueFormat};
pub use self::prune::PruneArgs;
pub use self::restore::RestoreArgs;
pub use self::simple::{CopyArgs, ExtractArgs, KeygenArgs, ListArgs, ShowArgs, VerifyArgs};
pub use self::unattended::{CompletionsArgs, DrillArgs, RunArgs, StatusArgs};
pub use crate::sources::settings::{NodeEtcdctlFlags, SourceFlags, SshFlags};

const AFTER_HELP: &str = "\
Examples:
  cpvault keygen -o ~/.config/cpvault/key.txt          # prints the public recipient age1…
  cpvault backup --store /backups --cluster admin -r age1… \\
      --kubeconfig admin.kubeconfig --profile gke-admin   # etcd by exec, PKI over SSH, all found
  cpvault backup --store /backups --cluster admin -r age1… \\
      --etcd-endpoint https://10.0.0.5:2379 --etcd-cacert ca.crt --etcd-cert c.crt --etcd-key c.key \\
      --ssh ubuntu@10.0.0.5                                # etcd over gRPC, PKI over SSH
  cpvault backup --store /backups --cluster admin -r age1… \\
      --kubeconfig admin.kubeconfig --profile kubeadm --etcd-via-portforward \\
      --etcd-cacert ca.crt --etcd-cert c.crt --etcd-key c.key   # distroless etcd, API only
  cpvault backup --store /backups --cluster lab -r age1… \\
      --etcd-snapshot-file snapshot.db --pki-dir /etc/kubernetes/pki
  cpvault list --store /backups
  cpvault verify --store /backups --latest -i key.txt   # deep: every layer
  cpvault extract --store /backups admin/latest -i key.txt --to ./restore
  cpvault inspect --store /backups admin/latest -i key.txt   # keys per resource and namespace

Every flag can also come from a CPVAULT_* variable or the config file (TOML; see README).
Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed, 4 a health check failed (status).";

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
    /// Create a new age identity (or, with --signing, a signing key); prints its public key.
    Keygen(KeygenArgs),
    /// Back up an etcd snapshot, PKI and files into one encrypted archive in the store.
    Backup(Box<BackupArgs>),
    /// List committed backups, newest first.
    ///
    /// Each cluster's listing cache (`<cluster>/listing-cache.json.zst`, rewritten by backup,
    /// copy and prune) stands in for the manifests it holds unchanged, so a store of tens of
    /// thousands of backups lists in seconds; every manifest the cache lacks is read. The
    /// cache only shows: `verify --all` reads the manifests themselves.
    List(ListArgs),
    /// Show one backup's manifest.
    Show(ShowArgs),
    /// Check backups: ciphertext size and sha256 without a key; every layer with -i.
    Verify(VerifyArgs),
    /// Decrypt a backup into a new directory, verifying every byte.
    Extract(ExtractArgs),
    /// What a backup's etcd snapshot holds: revision, live keys, counts and bytes per
    /// resource and namespace; read from the store, no restore.
    Inspect(InspectArgs),
    /// Keys added, removed and changed between two backups, per resource and namespace.
    Diff(DiffArgs),
    /// The value of one key (or every key under a prefix) at a backup's revision.
    Get(GetArgs),
    /// Remove old backups by a retention policy (restic's rules), and abandoned uploads.
    Prune(PruneArgs),
    /// Restore a backup onto a control-plane node over SSH (planned, verified, rolled back on
    /// failure), or into a local etcd data dir with --to-dir.
    Restore(Box<RestoreArgs>),
    /// Copy backups to another store, checking every byte's sha256 on the way.
    Copy(CopyArgs),
    /// Newest backup, its age and last drill per cluster; exit 4 when stale, missing or failed.
    Status(StatusArgs),
    /// Prove a backup restores: a throwaway local etcd on it, compared with the manifest.
    Drill(Box<DrillArgs>),
    /// The scheduled job: back up, prune and drill every configured cluster; write metrics.
    Run(Box<RunArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man,
}
