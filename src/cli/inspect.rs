//! The arguments of the commands that look inside a stored backup's etcd snapshot without
//! restoring it: inspect, diff and get (design §11). Describes only.

use clap::{Args, ValueEnum};

use super::{IdentityArgs, StoreArgs, TrustArgs};

const HOW: &str = "The archive is read twice (first the snapshot's page tree, then its keys), \
each time verified like `verify -i` does; nothing is used unless every check passes, and no \
plaintext is written to disk. A backup that fails a check, or whose snapshot is corrupt, \
exits 3.";

/// `inspect`.
#[derive(Debug, Args)]
#[command(after_help = format!("{HOW}

Keys are grouped by the Kubernetes layout: /registry/<resource>/<namespace>/<name> for
namespaced objects, /registry/<resource>/<name> for cluster-scoped ones, and
/registry/<group>/<resource>/... when the segment after /registry/ holds a dot (custom
resources: certificates.cert-manager.io). Keys that fit neither count as (other).

Examples:
  cpvault inspect admin/latest -i key.txt
  cpvault inspect admin/20261126T120000Z-1a2b3c4d -i key.txt --output json | jq '.resources[0]'"))]
pub struct InspectArgs {
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
    /// Also list every namespace under each resource (JSON always has them).
    #[arg(long)]
    pub namespaces: bool,
}

/// `diff`.
#[derive(Debug, Args)]
#[command(after_help = format!("{HOW} Both backups are read this way.

A key is changed when its value differs (sha256); added or removed when only one backup has
it live. Text shows counts per resource and namespace; --output json also lists every key.

Examples:
  cpvault diff admin/20261126T120000Z-1a2b3c4d admin/latest -i key.txt
  cpvault diff A B -i key.txt --prefix /registry/secrets/team-a/ --output json | jq -r '.keys[].key'"))]
pub struct DiffArgs {
    /// Store selection.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Keys.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The older backup: <cluster>/<id>.
    #[arg(value_name = "FROM")]
    pub from: String,
    /// The newer backup: <cluster>/<id>, or <cluster>/latest.
    #[arg(value_name = "TO")]
    pub to: String,
    /// Only keys starting with this prefix (e.g. /registry/configmaps/kube-system/).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub prefix: String,
    /// Compare backups of two different clusters (refused otherwise: every key would differ).
    #[arg(long)]
    pub across_clusters: bool,
}

/// How `get` prints values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValueFormat {
    /// JSON objects as JSON (as stored, unless --clean).
    Json,
    /// JSON objects as YAML documents.
    Yaml,
    /// The bytes exactly as stored, for one key (e.g. to pipe a protobuf value to a decoder).
    Raw,
}

/// `get`.
#[derive(Debug, Args)]
#[command(after_help = format!("{HOW}

JSON values (custom resources, and everything of an apiserver with JSON storage) print as
stored. Built-in objects stored as protobuf (the k8s\\0 envelope) are decoded into the JSON
the API serves, for every built-in kind of Kubernetes 1.33 (fields a newer Kubernetes added
are left out with a warning); a value that does not decode is named by apiVersion and kind,
and --format raw writes the stored bytes for a decoder such as auger. --output json prints one document with every key,
its revisions and its value (JSON objects inline, anything else base64).

Examples:
  cpvault get admin/latest /registry/configmaps/default/app -i key.txt
  cpvault get admin/latest --prefix /registry/cert-manager.io/ -i key.txt --clean --format yaml
  cpvault get admin/latest /registry/secrets/default/tls -i key.txt --format raw > secret.pb"))]
pub struct GetArgs {
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
    /// The etcd key, e.g. /registry/configmaps/default/app.
    #[arg(
        value_name = "KEY",
        required_unless_present = "prefix",
        conflicts_with = "prefix"
    )]
    pub key: Option<String>,
    /// Every key starting with this prefix instead of one key.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Drop what the server sets (metadata.resourceVersion, uid, managedFields, and status)
    /// so the object can be applied again.
    #[arg(long)]
    pub clean: bool,
    /// How values print in text output.
    #[arg(long, value_enum, default_value = "json")]
    pub format: ValueFormat,
}
