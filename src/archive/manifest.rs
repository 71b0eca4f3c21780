//! The manifests of format v1. The outer manifest sits beside the archive and is readable
//! without a key; the inner one is the archive's last entry. The outer one must never carry
//! plaintext hashes, modes or mtimes of entries: they would leak facts about secrets to
//! anyone who can list the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::text::escape_for_line;

/// Largest manifest (outer, inner, or `format.json`) a reader accepts: a real one is a few
/// KiB, and a store or archive may be hostile.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// How much of a parser's message (which may quote the input) an error keeps.
const MESSAGE_LIMIT: usize = 300;

fn too_big(what: &str, len: usize) -> Option<String> {
    (len as u64 > MAX_MANIFEST_BYTES)
        .then(|| format!("{what} is {len} bytes, over the {MAX_MANIFEST_BYTES}-byte limit"))
}

fn json_error(e: &serde_json::Error) -> String {
    escape_for_line(&e.to_string(), MESSAGE_LIMIT)
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// An etcd snapshot (`etcd/<name>.db`).
    EtcdSnapshot,
    /// A PKI file (`pki/<relative path>`).
    Pki,
    /// Any other file (`files/<name>`).
    File,
}

impl EntryKind {
    /// The tar path prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            EntryKind::EtcdSnapshot => "etcd/",
            EntryKind::Pki => "pki/",
            EntryKind::File => "files/",
        }
    }
}

/// One payload entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path inside the tar.
    pub path: String,
    /// What it holds.
    pub kind: EntryKind,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Plaintext sha256, hex (inner manifest only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Unix permission bits (inner manifest only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time, Unix seconds (inner manifest only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
}

impl Entry {
    /// The entry as the outer manifest shows it: path, kind and size only.
    pub fn public(&self) -> Entry {
        Entry {
            sha256: None,
            mode: None,
            mtime: None,
            ..self.clone()
        }
    }
}

/// Facts about the etcd snapshot in the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdInfo {
    /// Tar path of the snapshot entry.
    pub entry: String,
    /// Snapshot size in bytes.
    pub db_size: u64,
    /// Whether the snapshot ends in etcd's sha256 trailer (and it matched when written).
    pub hash_trailer: bool,
    /// etcd's revision at snapshot time, when the source knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Live keys at `revision`, when the source could count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// etcd cluster id (hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// etcd member id (hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// etcd server version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The cluster's members at backup time, when the source could list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<EtcdMember>>,
    /// Name of the member the snapshot came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_member: Option<String>,
}

/// One member of the etcd cluster, as its member list said at backup time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMember {
    /// `--name` (empty for a member that was added but has not started).
    pub name: String,
    /// Member id (hex, as `member_id`).
    pub id: String,
    /// Peer URLs.
    #[serde(default)]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(default)]
    pub client_urls: Vec<String>,
}

/// Whether a certificate's private key (same path, `.key` for `.crt`) is in the backup and
/// belongs to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStatus {
    /// Present, and its public half is the certificate's public key.
    Match,
    /// Present, but it is another key pair's.
    Mismatch,
    /// No such key file in the backup (normal for a CA bundle or a peer's certificate).
    Missing,
    /// Present, but not a key this build reads (encrypted, another algorithm, or damaged).
    Unreadable,
}

impl KeyStatus {
    /// As `show` prints it.
    pub fn name(self) -> &'static str {
        match self {
            KeyStatus::Match => "ok",
            KeyStatus::Mismatch => "mismatch",
            KeyStatus::Missing => "missing",
            KeyStatus::Unreadable => "unreadable",
        }
    }
}

/// Facts about one certificate file of the backup's PKI (its first certificate), recorded
/// at backup. Certificates are public; these facts leak nothing a node does not show anyone
/// who connects to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Tar path of the certificate file (`pki/…crt`).
    pub path: String,
    /// Subject distinguished name (RFC 4514 style); absent when not parseable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Issuer distinguished name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// End of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<DateTime<Utc>>,
    /// Whether its private key is in the backup and matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyStatus>,
    /// Why the file could not be read as a certificate; set only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where the recovery kit of a node backup (the `files/kit/…` entries) came from on the
/// node, so a restore puts each part back in its place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KitInfo {
    /// The static-pod manifests dir (`files/kit/manifests/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_dir: Option<String>,
    /// The EncryptionConfiguration kube-apiserver's `--encryption-provider-config` names
    /// (`files/kit/encryption/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_config: Option<String>,
    /// The encryption config the apiserver names that `--no-encryption-config` left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_config_left_out: Option<String>,
    /// The admin kubeconfig (`files/kit/admin.conf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_conf: Option<String>,
}

/// The tool that wrote a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Always `cpvault`.
    pub name: String,
    /// Its version.
    pub version: String,
}

impl ToolInfo {
    /// This build.
    pub fn current() -> ToolInfo {
        ToolInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Where the archive object is and how to check it without a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// Object key, relative to the store.
    pub key: String,
    /// Ciphertext size in bytes.
    pub size: u64,
    /// Ciphertext sha256, hex.
    pub sha256: String,
    /// Always `zstd`.
    pub compression: String,
    /// Always `age-v1`.
    pub encryption: String,
    /// Public recipients the archive is encrypted to (`age1…`, `ssh-…`), or `["scrypt"]`
    /// for a passphrase.
    pub recipients: Vec<String>,
}

/// A manifest of format v1: the outer one has `archive`, the inner one has per-entry
/// sha256/mode/mtime instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `cpvault-manifest`.
    pub format: String,
    /// Major format version.
    pub version: u32,
    /// Backup id.
    pub id: String,
    /// Cluster name.
    pub cluster: String,
    /// When the backup started.
    pub created: DateTime<Utc>,
    /// When the archive's content was sealed.
    pub completed: DateTime<Utc>,
    /// Writer.
    pub tool: ToolInfo,
    /// Host the backup ran on.
    pub host: String,
    /// User tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Human description of the sources.
    pub source: String,
    /// etcd facts, when the archive has a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdInfo>,
    /// Payload entries in archive order.
    pub entries: Vec<Entry>,
    /// Facts about every certificate file in the PKI, in archive order (empty in backups
    /// written before cpvault recorded them, and in backups without PKI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertInfo>,
    /// Where a node backup's recovery kit came from (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kit: Option<KitInfo>,
    /// The archive object (outer manifest only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveInfo>,
}

impl Manifest {
    /// `<cluster>/<id>`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.cluster, self.id)
    }

    /// The outer manifest for this inner one.
    pub fn to_outer(&self, archive: ArchiveInfo) -> Manifest {
        Manifest {
            entries: self.entries.iter().map(Entry::public).collect(),
            archive: Some(archive),
            ..self.clone()
        }
    }

    /// Total plaintext payload size.
    pub fn payload_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// The fields on which the inner manifest `inner` and this outer one disagree.
    pub fn disagreements(&self, inner: &Manifest) -> Vec<&'static str> {
        let mut out = vec![];
        let outer_view = Manifest {
            archive: None,
            ..self.clone()
        };
        let inner_view = inner.to_outer_without_archive();
        macro_rules! cmp {
            ($($f:ident),*) => {$( if outer_view.$f != inner_view.$f { out.push(stringify!($f)); } )*};
        }
        cmp!(
            format,
            version,
            id,
            cluster,
            created,
            completed,
            tool,
            host,
            tags,
            source,
            etcd,
            entries,
            certificates,
            kit
        );
        out
    }

    fn to_outer_without_archive(&self) -> Manifest {
        Manifest {
            entries: self.entries.iter().map(Entry::public).collect(),
            archive: None,
            ..self.clone()
        }
    }
}

/// Parses `format.json`, refusing another format or major version.
///
/// # Errors
/// A message naming the format/version found and what this build reads; input over
/// [`MAX_MANIFEST_BYTES`] is refused unread.
pub fn check_format_json(bytes: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    struct F {
        format: String,
        version: u32,
    }
    if let Some(m) = too_big("format.json", bytes.len()) {
        return Err(m);
    }
    let f: F = serde_json::from_slice(bytes)
        .map_err(|e| format!("format.json is not valid: {}", json_error(&e)))?;
    if f.format != super::ARCHIVE_FORMAT {
        return Err(format!(
            "format.json names format '{}', not '{}'",
            escape_for_line(&f.format, 100),
            super::ARCHIVE_FORMAT
        ));
    }
    if f.version != super::VERSION {
        return Err(format!(
            "archive format version {} is not supported by cpvault {} (it reads version {}); upgrade cpvault",
            f.version,
            env!("CARGO_PKG_VERSION"),
            super::VERSION
        ));
    }
    Ok(())
}

/// Parses a manifest, refusing an unknown format or major version with a clear message.
///
/// # Errors
/// Invalid JSON, another format, another major version, or input over
/// [`MAX_MANIFEST_BYTES`] (refused unread). Messages quote the input escaped and cut short.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
        version: Option<u32>,
    }
    if let Some(m) = too_big("the manifest", bytes.len()) {
        return Err(m);
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {}", json_error(&e)))?;
    if head.format.as_deref() != Some(super::MANIFEST_FORMAT) {
        return Err(format!(
            "format is {}, expected \"{}\"",
            head.format
                .as_deref()
                .map_or("missing".to_string(), |f| format!(
                    "\"{}\"",
                    escape_for_line(f, 100)
                )),
            super::MANIFEST_FORMAT
        ));
    }
    match head.version {
        Some(super::VERSION) => {}
        v => {
            let v = v.map_or("(missing)".to_string(), |v| v.to_string());
            return Err(format!(
                "manifest version {v} is not supported by cpvault {} (it reads version {}); upgrade cpvault",
                env!("CARGO_PKG_VERSION"),
                super::VERSION
            ));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| format!("invalid manifest: {}", json_error(&e)))
}

/// `format.json`'s content.
pub fn format_json() -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"format": super::ARCHIVE_FORMAT, "version": super::VERSION}),
    )
    .expect("static json")
}
