//! The checks over the whole cluster being restored: no split (every member named by the
//! nodes' etcd.yaml or by the backup is restored) and no etcd too old for the snapshot.

use super::super::plan::NodeLayout;
use super::super::version;
use super::{etcd_manifest, NodeFacts, PreflightError};

/// Refuses a restore that would split the cluster: every member a node's `--initial-cluster`
/// names, and every member the backup recorded (`recorded`, etcd's member list when it was
/// taken), must be among the members being restored (one per node, each once), unless the
/// node is to become a cluster of one (`shrink`). `layouts[i]` is node `i`'s. Both are asked because `--initial-cluster` is a
/// bootstrap flag: on kubeadm's first control-plane node it names that node alone however
/// many members joined later.
///
/// # Errors
/// [`PreflightError::SameMember`] for two nodes running one member;
/// [`PreflightError::Split`] for the first node whose etcd.yaml, or the backup, names a
/// member not restored.
pub fn membership(
    facts: &[NodeFacts],
    dests: &[String],
    layouts: &[NodeLayout],
    recorded: &[String],
    shrink: bool,
) -> Result<(), PreflightError> {
    for (i, f) in facts.iter().enumerate() {
        if let Some(j) = facts[..i]
            .iter()
            .position(|g| g.member.name == f.member.name)
        {
            return Err(PreflightError::SameMember {
                first: dests[j].clone(),
                second: dests[i].clone(),
                member: f.member.name.clone(),
            });
        }
    }
    if shrink {
        return Ok(());
    }
    let restored: Vec<&str> = facts.iter().map(|f| f.member.name.as_str()).collect();
    let restored_text = restored.join(" and ");
    let not_restored = |all: &[String]| -> Vec<String> {
        all.iter()
            .filter(|n| !restored.contains(&n.as_str()))
            .cloned()
            .collect()
    };
    for ((f, dest), l) in facts.iter().zip(dests).zip(layouts) {
        let all = f.member.initial_members();
        let missing = not_restored(&all);
        if !missing.is_empty() {
            return Err(PreflightError::Split {
                node: dest.clone(),
                named_by: format!("its {} (--initial-cluster)", etcd_manifest(l)),
                member: restored_text,
                all,
                missing,
            });
        }
    }
    // A backup of one member names whatever that member was called; only a member list of
    // several says the cluster had others.
    if recorded.len() > 1 {
        let missing = not_restored(recorded);
        if let (false, Some(dest)) = (missing.is_empty(), dests.first()) {
            return Err(PreflightError::Split {
                node: dest.clone(),
                named_by: "the backup's member list (etcd's, when it was taken)".into(),
                member: restored_text,
                all: recorded.to_vec(),
                missing,
            });
        }
    }
    Ok(())
}

/// The version guard on each node: the snapshot's recorded etcd version must not be of a
/// newer minor than the node's etcd ([`version::check`]); `force` is `--force-version`.
///
/// # Errors
/// [`PreflightError::EtcdTooOld`] for the first node whose etcd is too old.
pub fn versions(
    facts: &[NodeFacts],
    dests: &[String],
    snapshot: Option<&str>,
    force: bool,
) -> Result<(), PreflightError> {
    for (f, dest) in facts.iter().zip(dests) {
        version::check(snapshot, f.etcd_version.as_ref(), force).map_err(|cause| {
            PreflightError::EtcdTooOld {
                node: dest.clone(),
                cause,
            }
        })?;
    }
    Ok(())
}
