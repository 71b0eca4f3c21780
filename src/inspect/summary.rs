//! What `inspect` and `diff` report, computed from read snapshots: counts and bytes per
//! resource and namespace, and the keys added, removed and changed between two snapshots,
//! grouped the same way. Pure and serializable; rendering text is the commands' job.

use std::collections::BTreeMap;

use serde::Serialize;

use super::keys::{classify, Place};
use super::mvcc::{Record, Snapshot};

/// Keys and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Live keys.
    pub keys: u64,
    /// Bytes of their values.
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.keys += 1;
        self.bytes += bytes;
    }
}

/// One resource's keys.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceCount {
    /// `resource` or `resource.group`, or `(other)`.
    pub resource: String,
    /// Totals.
    #[serde(flatten)]
    pub count: Count,
    /// Per namespace (empty for cluster-scoped resources).
    pub namespaces: BTreeMap<String, Count>,
}

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `<cluster>/<id>`.
    pub backup: String,
    /// The revision etcd serves after restoring the snapshot.
    pub revision: i64,
    /// The last finished compaction.
    pub compacted_revision: Option<i64>,
    /// A compaction scheduled but not finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_compaction: Option<i64>,
    /// The raft index of the data.
    pub consistent_index: Option<u64>,
    /// Records stored (every revision still kept, tombstones included).
    pub records: u64,
    /// Live keys and their bytes.
    #[serde(flatten)]
    pub total: Count,
    /// Cluster-scoped objects (Kubernetes resources without a namespace).
    pub cluster_scoped: Count,
    /// Per resource, largest first.
    pub resources: Vec<ResourceCount>,
    /// Per namespace, largest first.
    pub namespaces: Vec<NamespaceCount>,
}

/// One namespace's keys, over every resource.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceCount {
    /// The namespace.
    pub namespace: String,
    /// Totals.
    #[serde(flatten)]
    pub count: Count,
}

/// Counts `s` per resource and namespace.
pub fn summarize(backup: String, s: &Snapshot) -> Summary {
    let mut resources: BTreeMap<String, ResourceCount> = BTreeMap::new();
    let mut namespaces: BTreeMap<String, Count> = BTreeMap::new();
    let mut total = Count::default();
    let mut cluster_scoped = Count::default();
    for (k, r) in &s.keys {
        let Place {
            resource,
            namespace,
        } = classify(k);
        total.add(r.size);
        let other = resource == super::keys::OTHER;
        let rc = resources
            .entry(resource.clone())
            .or_insert_with(|| ResourceCount {
                resource,
                count: Count::default(),
                namespaces: BTreeMap::new(),
            });
        rc.count.add(r.size);
        match namespace {
            Some(ns) => {
                rc.namespaces.entry(ns.clone()).or_default().add(r.size);
                namespaces.entry(ns).or_default().add(r.size);
            }
            None if !other => cluster_scoped.add(r.size),
            None => {}
        }
    }
    let mut resources: Vec<ResourceCount> = resources.into_values().collect();
    resources.sort_by(|a, b| {
        b.count
            .keys
            .cmp(&a.count.keys)
            .then(a.resource.cmp(&b.resource))
    });
    let mut namespaces: Vec<NamespaceCount> = namespaces
        .into_iter()
        .map(|(namespace, count)| NamespaceCount { namespace, count })
        .collect();
    namespaces.sort_by(|a, b| {
        b.count
            .keys
            .cmp(&a.count.keys)
            .then(a.namespace.cmp(&b.namespace))
    });
    Summary {
        backup,
        revision: s.revision,
        compacted_revision: s.compacted,
        scheduled_compaction: s.scheduled_compaction,
        consistent_index: s.consistent_index,
        records: s.records,
        total,
        cluster_scoped,
        resources,
        namespaces,
    }
}

/// How a key differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the newer one.
    Added,
    /// Only in the older one.
    Removed,
    /// In both, with a different value.
    Changed,
}

/// One key that differs.
#[derive(Debug, Clone, Serialize)]
pub struct KeyChange {
    /// The key (lossy UTF-8).
    pub key: String,
    /// How.
    pub change: Change,
    /// Its resource.
    pub resource: String,
    /// Its namespace.
    pub namespace: Option<String>,
}

/// Counts of one resource and namespace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupCount {
    /// Keys added.
    pub added: u64,
    /// Keys removed.
    pub removed: u64,
    /// Keys changed.
    pub changed: u64,
}

/// Differences between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// The older backup.
    pub from: String,
    /// The newer backup.
    pub to: String,
    /// Their revisions.
    pub from_revision: i64,
    /// See `from_revision`.
    pub to_revision: i64,
    /// Totals.
    #[serde(flatten)]
    pub total: GroupCount,
    /// Per resource, then namespace (`""` for cluster-scoped).
    pub groups: BTreeMap<String, BTreeMap<String, GroupCount>>,
    /// Every key that differs, sorted by key.
    pub keys: Vec<KeyChange>,
}

/// Whether two records of one key hold different values: by digest when both have one,
/// else by revision (the same revision of one cluster is the same value).
fn differs(a: &Record, b: &Record) -> bool {
    match (a.digest, b.digest) {
        (Some(x), Some(y)) => x != y,
        _ => a.revision != b.revision,
    }
}

/// The keys under `prefix` that differ from `a` to `b`.
pub fn diff(from: String, a: &Snapshot, to: String, b: &Snapshot, prefix: &[u8]) -> Diff {
    let mut out = Diff {
        from,
        to,
        from_revision: a.revision,
        to_revision: b.revision,
        total: GroupCount::default(),
        groups: BTreeMap::new(),
        keys: vec![],
    };
    let mut push = |key: &[u8], change: Change| {
        let Place {
            resource,
            namespace,
        } = classify(key);
        let g = out
            .groups
            .entry(resource.clone())
            .or_default()
            .entry(namespace.clone().unwrap_or_default())
            .or_default();
        for c in [&mut out.total, g] {
            match change {
                Change::Added => c.added += 1,
                Change::Removed => c.removed += 1,
                Change::Changed => c.changed += 1,
            }
        }
        out.keys.push(KeyChange {
            key: String::from_utf8_lossy(key).into_owned(),
            change,
            resource,
            namespace,
        });
    };
    let (mut i, mut j) = (0, 0);
    let (ak, bk) = (&a.keys, &b.keys);
    // Both key lists are sorted: one merge walk.
    while i < ak.len() || j < bk.len() {
        let ord = match (ak.get(i), bk.get(j)) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                if ak[i].0.starts_with(prefix) {
                    push(&ak[i].0, Change::Removed);
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                if bk[j].0.starts_with(prefix) {
                    push(&bk[j].0, Change::Added);
                }
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if ak[i].0.starts_with(prefix) && differs(&ak[i].1, &bk[j].1) {
                    push(&ak[i].0, Change::Changed);
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}
