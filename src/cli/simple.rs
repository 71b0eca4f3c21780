//! The arguments of the commands that take little more than a store, keys and backup
//! references: keygen, list, show, verify, extract and copy. Describes only.

use std::path::PathBuf;

use clap::Args;

use super::{IdentityArgs, MetricsArgs, SigningArgs, StoreArgs, TrustArgs};

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
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
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
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
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
