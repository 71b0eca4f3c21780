//! Argument groups shared by several commands: where the store is, which keys open
//! archives, whose signatures are trusted, which key signs. A group holds one concern's flags and variables; resolving them against the
//! config file is the commands' job ([`crate::commands::Ctx`]), never done here.

use std::path::PathBuf;

use clap::Args;

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

/// Where run metrics go (design §9).
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Write Prometheus metrics of this run to FILE (node_exporter textfile collector format,
    /// e.g. /var/lib/prometheus/node-exporter/cpvault.prom), merged with what it holds for
    /// other clusters and operations, replaced atomically.
    #[arg(long, env = "CPVAULT_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Push metrics of this run to a Prometheus Pushgateway at URL (job `cpvault`, grouped by
    /// cluster and operation).
    #[arg(long, env = "CPVAULT_PUSHGATEWAY", value_name = "URL")]
    pub pushgateway: Option<String>,
}
