//! The configuration file (TOML). Every setting here is also a flag and a `CPVAULT_*`
//! variable; flags and variables win, the file fills what they leave unset. Unknown keys are
//! refused so a typo never silently changes what a backup does. The file holds no secrets
//! (identities are referenced by path, passphrases come only from the environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The source settings' layer, declared with its flags in [`crate::sources::settings`]; the
/// file holds it as `[sources]` and in each `[clusters.NAME]`.
pub use crate::sources::settings::Sources;

/// The file's content.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Store URL.
    pub store: Option<String>,
    /// `text` or `json`.
    pub output: Option<String>,
    /// Default cluster name.
    pub cluster: Option<String>,
    /// Public recipients.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Recipients files.
    #[serde(default)]
    pub recipients_files: Vec<PathBuf>,
    /// Identity files for verify/extract.
    #[serde(default)]
    pub identities: Vec<PathBuf>,
    /// zstd level.
    pub zstd_level: Option<i32>,
    /// Signing key for backup and copy (`--signing-key`).
    pub signing_key: Option<PathBuf>,
    /// Allowed signers file (`--allowed-signers`).
    pub allowed_signers: Option<PathBuf>,
    /// Metrics textfile (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
    /// Pushgateway URL (`--pushgateway`).
    pub pushgateway: Option<String>,
    /// `status`: a newest backup older than this is stale (`--max-age`; default 26h).
    pub max_age: Option<crate::plan::retention::Duration>,
    /// `run`: drill a cluster when its last drill is older than this (`--drill-every`; 7d).
    pub drill_every: Option<crate::plan::retention::Duration>,
    /// Store settings by variable name (`AWS_ENDPOINT_URL`, `GOOGLE_BASE_URL`, …); a set
    /// environment variable wins. Secrets are refused here: they belong in the environment.
    #[serde(default)]
    pub store_settings: BTreeMap<String, String>,
    /// Tags added to every backup.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Backup sources.
    #[serde(default)]
    pub sources: Sources,
    /// Default retention policy for `prune`.
    #[serde(default)]
    pub retention: Option<crate::plan::retention::Policy>,
    /// Per-cluster settings.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
}

/// Settings of one cluster: its sources (the same keys as `[sources]`, which fill what a
/// cluster leaves unset) and its retention.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct ClusterConfig {
    /// This cluster's retention policy; replaces the default one.
    pub retention: Option<crate::plan::retention::Policy>,
    /// Where this cluster's backup comes from.
    pub sources: Sources,
}

// serde cannot combine `flatten` with `deny_unknown_fields`, and a typo in a cluster's
// section must still be refused: split the table by hand.
impl TryFrom<toml::Table> for ClusterConfig {
    type Error = String;

    fn try_from(mut t: toml::Table) -> Result<Self, String> {
        let retention = t
            .remove("retention")
            .map(|v| v.try_into())
            .transpose()
            .map_err(|e: toml::de::Error| format!("retention: {}", e.message()))?;
        let sources = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        Ok(ClusterConfig { retention, sources })
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Unreadable.
    #[error("config file '{path}': {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("config file '{path}': {message}")]
    Parse {
        /// Path.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
}

impl Config {
    /// The source settings of `cluster`: its `[clusters.NAME]` section over `[sources]`
    /// (just `[sources]` for no cluster, or one the file does not name).
    pub fn sources_for(&self, cluster: Option<&str>) -> Sources {
        cluster
            .and_then(|c| self.clusters.get(c))
            .map(|c| c.sources.clone())
            .unwrap_or_default()
            .or(&self.sources)
    }

    /// Loads `explicit`, or the default file (`$XDG_CONFIG_HOME/cpvault/config.toml`, else
    /// `~/.config/cpvault/config.toml`) when it exists, or nothing.
    ///
    /// # Errors
    /// [`ConfigError`] when an explicit file is missing, or any file is unreadable or invalid.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match default_path() {
                Some(p) if p.is_file() => p,
                _ => return Ok(Config::default()),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string().replace('\n', " "),
        })?;
        for name in config.store_settings.keys() {
            let upper = name.to_ascii_uppercase();
            let secret = [
                "SECRET",
                "TOKEN",
                "PASSWORD",
                "SAS",
                "ACCOUNT_KEY",
                "SERVICE_ACCOUNT_KEY",
            ]
            .iter()
            .any(|s| upper.contains(s));
            if secret {
                return Err(ConfigError::Parse {
                    path,
                    message: format!(
                        "[store_settings] {name} is a secret, and the config file holds none: set it in the environment instead"
                    ),
                });
            }
        }
        Ok(config)
    }
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("cpvault").join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "store = \"/x\"\nstroe = \"/y\"\n").unwrap();
        let err = Config::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("stroe") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn full_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "store = \"/b\"\ncluster = \"admin\"\nrecipients = [\"age1x\"]\nzstd_level = 5\n[tags]\nenv = \"prod\"\n[sources]\npki_dir = \"/etc/kubernetes/pki\"\n[retention]\nkeep_daily = 7\n[clusters.admin.retention]\nkeep_last = 30\n",
        )
        .unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.store.as_deref(), Some("/b"));
        assert_eq!(c.zstd_level, Some(5));
        assert_eq!(c.tags["env"], "prod");
        assert_eq!(
            c.sources.pki_dir.unwrap(),
            PathBuf::from("/etc/kubernetes/pki")
        );
    }
}
