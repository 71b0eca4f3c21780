//! The configuration file (TOML). Every setting here is also a flag and a `CPVAULT_*`
//! variable; flags and variables win, the file fills what they leave unset. Unknown keys are
//! refused so a typo never silently changes what a backup does. The file holds no secrets
//! (identities are referenced by path, passphrases come only from the environment).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

/// Backup sources, from the file (`[sources]`, `[clusters.NAME]`) or from flags. Every field
/// is optional; [`Sources::or`] layers them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    /// An existing etcd snapshot file.
    pub etcd_snapshot_file: Option<PathBuf>,
    /// A local PKI directory.
    pub pki_dir: Option<PathBuf>,
    /// Extra files.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// etcd client URLs for a direct gRPC snapshot.
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// CA of etcd's server certificate (local path).
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate for etcd (local path).
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd (local path).
    pub etcd_key: Option<PathBuf>,
    /// kubeconfig of the (admin) cluster.
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context.
    pub context: Option<String>,
    /// Cluster profile.
    pub profile: Option<crate::sources::kube::Profile>,
    /// User cluster namespace (gke-user).
    pub namespace: Option<String>,
    /// `USER@HOST` of the control-plane node.
    pub ssh: Option<String>,
    /// SSH user when the node is found through the kubeconfig (default `ubuntu`).
    pub ssh_user: Option<String>,
    /// SSH private key file.
    pub ssh_key: Option<PathBuf>,
    /// SSH port.
    pub ssh_port: Option<u16>,
    /// Jump host `USER@HOST[:PORT]`.
    pub ssh_jump: Option<String>,
    /// known_hosts file.
    pub ssh_known_hosts: Option<PathBuf>,
    /// Trust a node host key seen for the first time.
    pub ssh_accept_new: Option<bool>,
    /// sudo policy on the node.
    pub ssh_sudo: Option<crate::sources::ssh::SudoMode>,
    /// PKI dir on the node.
    pub ssh_pki_dir: Option<String>,
    /// Take the etcd snapshot over SSH with etcdctl on the node.
    pub ssh_etcd: Option<bool>,
    /// How etcdctl is run on the node or in the pod.
    pub node_etcdctl: Option<String>,
    /// etcd's client URL as seen from the node or pod.
    pub node_etcd_endpoint: Option<String>,
    /// CA path on the node or in the pod.
    pub node_etcd_cacert: Option<String>,
    /// Client certificate path on the node or in the pod.
    pub node_etcd_cert: Option<String>,
    /// Client key path on the node or in the pod.
    pub node_etcd_key: Option<String>,
}

impl Sources {
    /// Fields of `self`, with the unset ones taken from `base`.
    pub fn or(self, base: &Sources) -> Sources {
        fn vec_or<T: Clone>(a: Vec<T>, b: &[T]) -> Vec<T> {
            if a.is_empty() {
                b.to_vec()
            } else {
                a
            }
        }
        let b = base.clone();
        Sources {
            etcd_snapshot_file: self.etcd_snapshot_file.or(b.etcd_snapshot_file),
            pki_dir: self.pki_dir.or(b.pki_dir),
            files: vec_or(self.files, &b.files),
            etcd_endpoints: vec_or(self.etcd_endpoints, &b.etcd_endpoints),
            etcd_cacert: self.etcd_cacert.or(b.etcd_cacert),
            etcd_cert: self.etcd_cert.or(b.etcd_cert),
            etcd_key: self.etcd_key.or(b.etcd_key),
            kubeconfig: self.kubeconfig.or(b.kubeconfig),
            context: self.context.or(b.context),
            profile: self.profile.or(b.profile),
            namespace: self.namespace.or(b.namespace),
            ssh: self.ssh.or(b.ssh),
            ssh_user: self.ssh_user.or(b.ssh_user),
            ssh_key: self.ssh_key.or(b.ssh_key),
            ssh_port: self.ssh_port.or(b.ssh_port),
            ssh_jump: self.ssh_jump.or(b.ssh_jump),
            ssh_known_hosts: self.ssh_known_hosts.or(b.ssh_known_hosts),
            ssh_accept_new: self.ssh_accept_new.or(b.ssh_accept_new),
            ssh_sudo: self.ssh_sudo.or(b.ssh_sudo),
            ssh_pki_dir: self.ssh_pki_dir.or(b.ssh_pki_dir),
            ssh_etcd: self.ssh_etcd.or(b.ssh_etcd),
            node_etcdctl: self.node_etcdctl.or(b.node_etcdctl),
            node_etcd_endpoint: self.node_etcd_endpoint.or(b.node_etcd_endpoint),
            node_etcd_cacert: self.node_etcd_cacert.or(b.node_etcd_cacert),
            node_etcd_cert: self.node_etcd_cert.or(b.node_etcd_cert),
            node_etcd_key: self.node_etcd_key.or(b.node_etcd_key),
        }
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
