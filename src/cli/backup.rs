//! `cpvault backup`'s arguments: the store, recipients, the sources (declared with their
//! config keys in [`crate::sources::settings`]) and the upload's tuning. Describes only.

use std::path::PathBuf;

use clap::Args;

use super::{MetricsArgs, SigningArgs, StoreArgs};
use crate::sources::settings::SourceFlags;

/// `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Metrics.
    #[command(flatten)]
    pub metrics: MetricsArgs,
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
