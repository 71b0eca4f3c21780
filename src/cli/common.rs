//! Argument groups shared by several commands: where the store is, which keys open
//! archives. A group holds one concern's flags and variables; resolving them against the
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
