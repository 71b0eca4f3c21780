//! The prune plan: retention decisions for committed backups, plus what to do with archives
//! that never got a manifest and manifests whose archive is gone. Pure like the retention
//! planner it wraps: it reads no clock and no store, so the same inputs always give the
//! same plan, and it never decides to remove an upload that may still be in flight.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::retention::{self, Decision, Policy, Snapshot};

/// An archive object with no manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// Object key.
    pub key: String,
    /// Upload time as the store reports it.
    pub last_modified: DateTime<Utc>,
}

/// Inputs to the plan.
pub struct Inputs<'a> {
    /// Committed backups whose archive exists.
    pub backups: &'a [Snapshot],
    /// Committed backups whose archive object is missing (`<cluster>/<id>`).
    pub broken: &'a [String],
    /// Archive objects without a manifest.
    pub orphans: &'a [Orphan],
    /// Committed backups that are not trusted under the allowed signers: never counted by
    /// the keep rules, so forged newer backups cannot push a genuine one out.
    pub untrusted: &'a [Untrusted],
    /// Policy per cluster; clusters not named use `default`.
    pub policies: &'a BTreeMap<String, Policy>,
    /// Policy for other clusters.
    pub default: &'a Policy,
    /// Zone for day/week/month buckets.
    pub tz: Tz,
    /// The current time.
    pub now: DateTime<Utc>,
    /// How old an orphan must be before it is removed.
    pub grace: TimeDelta,
}

/// A committed backup whose author is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Untrusted {
    /// Cluster.
    pub cluster: String,
    /// Backup id.
    pub id: String,
    /// Why it is not trusted.
    pub reason: String,
}

/// What prune will do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrunePlan {
    /// Backups kept, with reasons, newest first.
    pub keep: Vec<Decision>,
    /// Backups removed, newest first.
    pub remove: Vec<Decision>,
    /// Orphaned archives old enough to remove.
    pub remove_orphans: Vec<Orphan>,
    /// Orphaned archives still inside the grace period (possibly uploads in flight).
    pub young_orphans: Vec<Orphan>,
    /// Manifests whose archive is missing.
    pub broken: Vec<String>,
    /// Backups that are not trusted: reported, and removed only on request.
    pub untrusted: Vec<Untrusted>,
    /// Clusters whose policy is empty (nothing of theirs is removed).
    pub empty_policy: Vec<String>,
}

/// Computes the plan.
pub fn plan(i: &Inputs<'_>) -> PrunePlan {
    let mut by_cluster: BTreeMap<&str, Vec<Snapshot>> = BTreeMap::new();
    for b in i.backups {
        by_cluster.entry(&b.cluster).or_default().push(b.clone());
    }
    let mut out = PrunePlan::default();
    for (cluster, snaps) in by_cluster {
        let policy = i.policies.get(cluster).unwrap_or(i.default);
        if policy.is_empty() {
            out.empty_policy.push(cluster.to_string());
        }
        let p = retention::plan(&snaps, policy, i.tz, i.now);
        out.keep.extend(p.keep);
        out.remove.extend(p.remove);
    }
    let newest_first = |a: &Decision, b: &Decision| {
        (&b.created, &b.cluster, &b.id).cmp(&(&a.created, &a.cluster, &a.id))
    };
    out.keep.sort_by(newest_first);
    out.remove.sort_by(newest_first);
    for o in i.orphans {
        if i.now - o.last_modified >= i.grace {
            out.remove_orphans.push(o.clone());
        } else {
            out.young_orphans.push(o.clone());
        }
    }
    out.broken = i.broken.to_vec();
    out.untrusted = i.untrusted.to_vec();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(cluster: &str, id: &str, created: &str) -> Snapshot {
        Snapshot {
            cluster: cluster.into(),
            id: id.into(),
            created: created.parse().unwrap(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn per_cluster_policies_and_grace() {
        let backups = vec![
            snap("a", "1", "2026-01-01T00:00:00Z"),
            snap("a", "2", "2026-01-02T00:00:00Z"),
            snap("b", "1", "2026-01-01T00:00:00Z"),
            snap("b", "2", "2026-01-02T00:00:00Z"),
        ];
        let mut policies = BTreeMap::new();
        policies.insert(
            "a".to_string(),
            Policy {
                keep_last: Some(1),
                ..Default::default()
            },
        );
        let now: DateTime<Utc> = "2026-01-03T00:00:00Z".parse().unwrap();
        let orphans = vec![
            Orphan {
                key: "a/old".into(),
                last_modified: "2026-01-01T00:00:00Z".parse().unwrap(),
            },
            Orphan {
                key: "a/new".into(),
                last_modified: "2026-01-02T23:00:00Z".parse().unwrap(),
            },
        ];
        let p = plan(&Inputs {
            backups: &backups,
            broken: &[],
            orphans: &orphans,
            untrusted: &[],
            policies: &policies,
            default: &Policy::default(),
            tz: Tz::UTC,
            now,
            grace: TimeDelta::hours(24),
        });
        let removed: Vec<(&str, &str)> = p
            .remove
            .iter()
            .map(|d| (d.cluster.as_str(), d.id.as_str()))
            .collect();
        assert_eq!(removed, vec![("a", "1")]);
        assert_eq!(p.keep.len(), 3);
        assert_eq!(p.empty_policy, vec!["b".to_string()]);
        assert_eq!(p.remove_orphans.len(), 1);
        assert_eq!(p.remove_orphans[0].key, "a/old");
        assert_eq!(p.young_orphans[0].key, "a/new");
    }
}
