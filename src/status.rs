//! `status`: per cluster, the newest usable backup (trusted, when allowed signers are set), its
//! age and size, and its last drill, judged against a maximum age. Reading the store is
//! [`gather`]; the verdict is [`judge`], pure and tested alone. A store that cannot be read
//! is an error, never "healthy".

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cpvault_backends::{ObjectInfo, Store};
use serde::Serialize;

use crate::archive::manifest::Manifest;
use crate::catalog::Catalog;
use crate::drill::{Record, DRILL_SIGNATURE_SUFFIX, DRILL_SUFFIX, MAX_DRILL_BYTES};
use crate::trust::AllowedSigners;

/// The last drill a cluster had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastDrill {
    /// The backup drilled.
    pub backup: String,
    /// When.
    pub drilled_at: DateTime<Utc>,
    /// Whether it passed.
    pub ok: bool,
}

/// One cluster's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// Cluster.
    pub cluster: String,
    /// Whether nothing below is a problem.
    pub ok: bool,
    /// What is wrong, for the operator.
    pub problems: Vec<String>,
    /// The newest usable backup.
    pub newest: Option<String>,
    /// When it was made.
    pub created: Option<DateTime<Utc>>,
    /// Its age in seconds at the time of the check.
    pub age_seconds: Option<i64>,
    /// Its plaintext size.
    pub data_bytes: Option<u64>,
    /// Its stored (encrypted) size.
    pub stored_bytes: Option<u64>,
    /// Usable backups of the cluster.
    pub backups: usize,
    /// Backups left out because they are not trusted.
    pub untrusted: usize,
    /// The last drill, if any.
    pub last_drill: Option<LastDrill>,
}

/// Judges one cluster: no backup, a newest older than `cutoff`, or a failed last drill are
/// problems.
pub fn judge(
    cluster: &str,
    backups: &[&Manifest],
    untrusted: usize,
    last_drill: Option<LastDrill>,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ClusterStatus {
    let newest = backups.iter().max_by_key(|m| (m.created, m.id.clone()));
    let mut problems = vec![];
    match newest {
        None if untrusted > 0 => problems.push(format!(
            "no trusted backup ({untrusted} untrusted ones left out)"
        )),
        None => problems.push("no backup".into()),
        Some(m) if m.created < cutoff => problems.push(format!(
            "newest backup {} is {} old, older than the maximum age",
            m.reference(),
            crate::progress::age(now - m.created)
        )),
        Some(_) => {}
    }
    if let Some(d) = last_drill.as_ref().filter(|d| !d.ok) {
        problems.push(format!(
            "the last drill ({} at {}) failed",
            d.backup,
            d.drilled_at.format("%Y-%m-%d %H:%M")
        ));
    }
    ClusterStatus {
        cluster: cluster.to_string(),
        ok: problems.is_empty(),
        problems,
        newest: newest.map(|m| m.reference()),
        created: newest.map(|m| m.created),
        age_seconds: newest.map(|m| (now - m.created).num_seconds()),
        data_bytes: newest.map(|m| m.payload_size()),
        stored_bytes: newest.and_then(|m| m.archive.as_ref().map(|a| a.size)),
        backups: backups.len(),
        untrusted,
        last_drill,
    }
}

/// Reads the store and judges each of `clusters` (plus, with `all`, every cluster found);
/// through the listing caches when `cached` (to show, not to decide what to do).
///
/// # Errors
/// The store cannot be listed.
pub async fn gather(
    store: &Store,
    clusters: &[String],
    all: bool,
    signers: Option<&AllowedSigners>,
    cutoff: DateTime<Utc>,
    cached: bool,
) -> anyhow::Result<Vec<ClusterStatus>> {
    let prefix = match (all, clusters) {
        (false, [one]) => Some(one.as_str()),
        _ => None,
    };
    // One listing for the backups and every cluster's drill records.
    let objects = store
        .list(prefix.map(|c| format!("{c}/")).as_deref())
        .await?;
    let cat: Catalog = crate::catalog::from_listing(store, &objects, signers, cached).await;
    let drills: Vec<ObjectInfo> = objects
        .into_iter()
        .filter(|o| o.key.ends_with(DRILL_SUFFIX) && o.size <= MAX_DRILL_BYTES)
        .collect();
    let mut names: BTreeSet<String> = clusters.iter().cloned().collect();
    if all {
        names.extend(cat.backups.iter().map(|m| m.cluster.clone()));
        names.extend(cat.untrusted.iter().map(|(m, _)| m.cluster.clone()));
    }
    let now = Utc::now();
    let mut out = vec![];
    for name in names {
        let backups: Vec<&Manifest> = cat.backups.iter().filter(|m| m.cluster == name).collect();
        let untrusted = cat
            .untrusted
            .iter()
            .filter(|(m, _)| m.cluster == name)
            .count();
        let own = format!("{name}/");
        let records = drills.iter().filter(|o| o.key.starts_with(&own));
        let drill = last_drill(store, records, signers).await;
        out.push(judge(&name, &backups, untrusted, drill, cutoff, now));
    }
    Ok(out)
}

/// The cluster's most recent drill record (by store time); with allowed signers, only a
/// signed and trusted one counts.
async fn last_drill<'a>(
    store: &Store,
    records: impl Iterator<Item = &'a ObjectInfo>,
    signers: Option<&AllowedSigners>,
) -> Option<LastDrill> {
    let mut records: Vec<&ObjectInfo> = records.collect();
    records.sort_by_key(|o| std::cmp::Reverse(o.last_modified));
    for o in records {
        let Ok(Some(bytes)) = crate::catalog::read_small(store, &o.key, MAX_DRILL_BYTES).await
        else {
            continue;
        };
        if let Some(s) = signers {
            let sig_key = format!(
                "{}{DRILL_SIGNATURE_SUFFIX}",
                o.key.trim_end_matches(DRILL_SUFFIX)
            );
            let Ok(Some(sig)) = crate::catalog::read_signature(store, &sig_key).await else {
                tracing::warn!(
                    "drill record {} is unsigned or its signature unusable; not counted",
                    o.key
                );
                continue;
            };
            if let Err(why) = s.verify(&bytes, &sig, Utc::now()) {
                tracing::warn!("drill record {}: {why}; not counted", o.key);
                continue;
            }
        }
        if let Ok(r) = serde_json::from_slice::<Record>(&bytes) {
            return Some(LastDrill {
                backup: r.backup,
                drilled_at: r.drilled_at,
                ok: r.ok,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(cluster: &str, created: &str) -> Manifest {
        let created: DateTime<Utc> = created.parse().unwrap();
        serde_json::from_value(serde_json::json!({
            "format": "cpvault-manifest", "version": 1,
            "id": format!("{}-00000000", created.format("%Y%m%dT%H%M%SZ")),
            "cluster": cluster, "created": created, "completed": created,
            "tool": {"name": "cpvault", "version": "0"}, "host": "h", "tags": {},
            "source": "s", "entries": []
        }))
        .unwrap()
    }

    #[test]
    fn fresh_stale_missing_and_failed_drill() {
        let now: DateTime<Utc> = "2026-12-02T12:00:00Z".parse().unwrap();
        let cutoff = now - chrono::TimeDelta::hours(26);
        let fresh = manifest("a", "2026-12-02T06:00:00Z");
        let old = manifest("a", "2026-11-30T06:00:00Z");
        assert!(judge("a", &[&fresh, &old], 0, None, cutoff, now).ok);
        let stale = judge("a", &[&old], 0, None, cutoff, now);
        assert!(
            !stale.ok && stale.problems[0].contains("older than"),
            "{stale:?}"
        );
        assert!(!judge("a", &[], 0, None, cutoff, now).ok);
        assert!(judge("a", &[], 2, None, cutoff, now).problems[0].contains("untrusted"));
        let failed = LastDrill {
            backup: fresh.reference(),
            drilled_at: now,
            ok: false,
        };
        let s = judge("a", &[&fresh], 0, Some(failed), cutoff, now);
        assert!(!s.ok && s.problems[0].contains("drill"), "{s:?}");
    }
}
