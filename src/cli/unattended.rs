//! Arguments of the commands a scheduler runs or an operator runs for a scheduler: `status`,
//! `drill`, `run`, and the shell completions and man page an installed binary ships.

use clap::Args;

use super::{IdentityArgs, MetricsArgs, SigningArgs, StoreArgs, TrustArgs};
use crate::plan::retention::Duration;

/// `status`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 every cluster is healthy; 4 a cluster has no backup, its newest \
backup is older than --max-age, or its last drill failed; 1 the store could not be read."
)]
pub struct StatusArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust: with allowed signers, only trusted backups (and signed drill records) count.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// This cluster only.
    #[arg(long, env = "CPVAULT_CLUSTER", conflicts_with = "all")]
    pub cluster: Option<String>,
    /// Every cluster of the config file's [clusters.NAME] and every cluster in the store.
    #[arg(long)]
    pub all: bool,
    /// A newest backup older than this is stale (e.g. 26h, 2d) [default: config max_age, else 26h].
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<Duration>,
}

/// `drill`.
#[derive(Debug, Args)]
#[command(
    after_help = "A drill extracts the backup verified into a private temp dir, restores its \
snapshot with the local etcdctl, starts a throwaway etcd on loopback on it, compares the revision \
and key count it serves with the manifest, checks that every private key of the PKI matches its \
certificate, reports certificates' expiry, and removes every plaintext file (also on Ctrl-C). \
The result is stored beside the backup as <cluster>/<id>.drill.json (signed with --signing-key) \
for status and metrics. Needs etcd, etcdctl and openssl on this machine. Exit 3 when it fails."
)]
pub struct DrillArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Keys.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Signs the drill record.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// The backup: <cluster>/<id>, or <cluster>/latest.
    #[arg(value_name = "REF", required_unless_present = "latest")]
    pub reference: Option<String>,
    /// The newest backup of --cluster (or of every cluster with --all).
    #[arg(long, conflicts_with = "reference")]
    pub latest: bool,
    /// With --latest: this cluster.
    #[arg(long, env = "CPVAULT_CLUSTER")]
    pub cluster: Option<String>,
    /// With --latest: every cluster in the store.
    #[arg(long, requires = "latest", conflicts_with = "cluster")]
    pub all: bool,
}

/// `run`.
#[derive(Debug, Args)]
#[command(
    after_help = "For schedulers (systemd timers, Kubernetes CronJobs): backs up every \
[clusters.NAME] of the config file, prunes each by its retention policy, drills the newest backup \
of a cluster when its last drill is older than --drill-every (only with an identity), writes \
metrics, and exits 1 if anything failed (every failure is also in the metrics and the log)."
)]
pub struct RunArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Keys for drills (no identity: no drills).
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Signing of backups and drill records.
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Drill a cluster's newest backup when its last drill is older than this [default:
    /// config drill_every, else 7d].
    #[arg(long, value_name = "DURATION")]
    pub drill_every: Option<Duration>,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
