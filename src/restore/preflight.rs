//! Preflight: read-only probes of the node before anything changes — its etcd member flags
//! (from its own `etcd.yaml`), that the data dir is the one etcd runs on and is a data dir,
//! the tools the plan's scripts use, free space, and the node's CA to compare with the
//! archive's, and that the archive holds every PKI file the node's static-pod manifests name
//! (the restore replaces the PKI dir), and that no certificate the backup recorded has expired. Each probe is a script and a pure reading of its output, so the decisions are
//! tested without a node. A probe must never change the node: every script here only reads.

use crate::archive::manifest::Manifest;
use crate::etcdctl::quote;
use crate::sources::ssh::Node;
use crate::sources::SourceError;

use super::plan::{parse_member, Member, NodeLayout};
use super::said;
use super::version::{self, Installed, TooNew};

mod cluster;
pub use cluster::{membership, versions};

/// What the probes learned about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The etcd member flags, as the node runs etcd.
    pub member: Member,
    /// sha256 of the node's `ca.crt`; `None` when it has no readable one.
    pub ca_sha256: Option<String>,
    /// The etcd version the node runs (its etcd.yaml's image tag, else `etcd --version` on
    /// the node); `None` when neither tells.
    pub etcd_version: Option<Installed>,
}

/// A preflight refusal: nothing on the node was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The connection failed while probing.
    #[error(transparent)]
    Ssh(#[from] SourceError),
    /// `etcd.yaml` could not be read.
    #[error("preflight on {node}: cannot read {path}: {cause} (check --manifests-dir; the node's etcd.yaml gives the member name and peer URLs)")]
    EtcdManifest {
        /// The node.
        node: String,
        /// The manifest's path there.
        path: String,
        /// What the node said.
        cause: String,
    },
    /// `etcd.yaml` lacks a member flag.
    #[error("preflight on {node}: {cause}")]
    Member {
        /// The node.
        node: String,
        /// Which flag is missing.
        cause: String,
    },
    /// etcd runs on another data dir than the one given.
    #[error("preflight on {node}: {manifest} runs etcd with --data-dir={runs_on}, but --etcd-data-dir is {given}; nothing was changed — pass --etcd-data-dir {runs_on}")]
    DataDirMismatch {
        /// The node.
        node: String,
        /// The manifest's path there.
        manifest: String,
        /// The manifest's `--data-dir`.
        runs_on: String,
        /// `--etcd-data-dir`.
        given: String,
    },
    /// The data dir has no `member/`.
    #[error("preflight on {node}: {data_dir} has no member/ directory, so it is not an etcd data dir; nothing was changed — check --etcd-data-dir")]
    NotADataDir {
        /// The node.
        node: String,
        /// `--etcd-data-dir`.
        data_dir: String,
    },
    /// A tool the scripts need is missing.
    #[error("preflight on {node}: a required tool: {cause} (install it, or set --node-etcdctl)")]
    Tool {
        /// The node.
        node: String,
        /// Which tool.
        cause: String,
    },
    /// `df`/`stat` gave no answer to read.
    #[error("preflight on {node}: df/stat: {cause}")]
    DiskProbe {
        /// The node.
        node: String,
        /// What the node said.
        cause: String,
    },
    /// Not enough free space.
    #[error("preflight on {node}: {dir} has {} free, the restore needs {} there (staging takes 2× the snapshot, the new data dir 1×); free space or choose --staging-dir", crate::progress::human(*free), crate::progress::human(*need))]
    NoSpace {
        /// The node.
        node: String,
        /// The directory short of space.
        dir: String,
        /// Free bytes.
        free: u64,
        /// Needed bytes.
        need: u64,
    },
    /// The node's CA cannot be compared.
    #[error("preflight on {node}: the node has no readable {pki_dir}/ca.crt to compare with the archive's CA, so it cannot be told that this backup is of this cluster; nothing was changed — check --node-pki-dir, or pass --force-different-cluster")]
    NodeCaUnreadable {
        /// The node.
        node: String,
        /// The PKI dir there.
        pki_dir: String,
    },
    /// The node's CA is not the archive's.
    #[error("preflight on {node}: the node's {pki_dir}/ca.crt differs from the archive's pki/ca.crt, so this backup is from another cluster (or the CA was rotated); nothing was changed — pass --force-different-cluster if that is intended")]
    OtherCluster {
        /// The node.
        node: String,
        /// The PKI dir there.
        pki_dir: String,
    },
    /// Another restore is running on the node, or one was killed and not rolled back.
    #[error("preflight on {node}: restore {} is unfinished on this node (its journal is in {staging_parent}): another cpvault restore is running there, or one was killed; nothing was changed — if none is running, undo it first with `cpvault restore --rollback {} --ssh … --staging-dir {staging_parent}`", ids.join(", "), ids[0])]
    Unfinished {
        /// The node.
        node: String,
        /// Where the journals are.
        staging_parent: String,
        /// The unfinished restores' ids.
        ids: Vec<String>,
    },
    /// The node's manifests name PKI files the archive lacks.
    #[error("preflight on {node}: the node's static-pod manifests name {} file(s) under {pki_dir} that {reference} does not hold: {}; the restore replaces {pki_dir} with the backup's, so the control plane could not start; nothing was changed — restore a backup that includes the node's PKI (backup --ssh … or --pki-dir)", missing.len(), crate::text::escape_for_line(&missing.join(", "), 2000))]
    PkiMissing {
        /// The node.
        node: String,
        /// The PKI dir there.
        pki_dir: String,
        /// The backup.
        reference: String,
        /// Paths relative to the PKI dir.
        missing: Vec<String>,
    },
    /// The node's etcd.yaml (or the backup) names members that are not being restored:
    /// restoring only these nodes would split the cluster.
    #[error("preflight on {node}: {named_by} names {} etcd members ({}), but the restore covers only {member}; it would start a new cluster while {} still hold the old one (a split); nothing was changed — restore every member's node together (one --ssh each, with its node flags), or restore the data dirs with `restore REF --to-dir DIR --members NAME=PEER_URL,…` and put each in place by hand, or stop the other members and pass --shrink-to-one-member to make one node a cluster of one (its etcd.yaml is rewritten; the other members must be reset and re-joined)", all.len(), all.join(", "), missing.join(" and "))]
    Split {
        /// The node.
        node: String,
        /// What names the members: the node's etcd.yaml or the backup's member list.
        named_by: String,
        /// The members restored (`a and b`).
        member: String,
        /// Every member --initial-cluster names.
        all: Vec<String>,
        /// The members not being restored.
        missing: Vec<String>,
    },
    /// Two nodes given run the same etcd member.
    #[error("preflight: {first} and {second} both run etcd member {member} (the --name in their etcd.yaml); nothing was changed — give each member's node once")]
    SameMember {
        /// The first node.
        first: String,
        /// The other.
        second: String,
        /// The member's name.
        member: String,
    },
    /// The snapshot needs a newer etcd than the node runs.
    #[error("preflight on {node}: {cause}")]
    EtcdTooOld {
        /// The node.
        node: String,
        /// The versions.
        cause: TooNew,
    },
    /// Certificates in the backup are no longer valid.
    #[error("preflight: {reference} holds {} certificate(s) already expired: {}; a control plane restored with them fails to start (etcd, kube-apiserver and the kubelet refuse expired certificates); nothing was changed — restore a newer backup, or pass --force-expired and renew them on the node afterwards (kubeadm certs renew)", expired.len(), crate::text::escape_for_line(&expired.join(", "), 2000))]
    Expired {
        /// The backup.
        reference: String,
        /// `path (notAfter …)` of each expired certificate.
        expired: Vec<String>,
    },
    /// The archive has no CA to compare.
    #[error("preflight: {reference} has no pki/ca.crt to compare with the node's CA; nothing was changed — pass --force-different-cluster to restore anyway")]
    ArchiveHasNoCa {
        /// The backup.
        reference: String,
    },
}

/// Runs every probe on `node`, in order, stopping at the first refusal.
///
/// # Errors
/// The first [`PreflightError`]; the node is unchanged either way.
pub async fn probe(node: &Node, l: &NodeLayout, m: &Manifest) -> Result<NodeFacts, PreflightError> {
    let dest = node.destination();
    // First: two restores on one node would move each other's state aside.
    let out = node.run(&journals_script(&l.staging_parent)).await?;
    let ids = unfinished(&String::from_utf8_lossy(&out.stdout));
    if !ids.is_empty() {
        return Err(PreflightError::Unfinished {
            node: dest,
            staging_parent: l.staging_parent.clone(),
            ids,
        });
    }
    let (member, etcd_yaml) = member(node, l, &dest).await?;
    // The apiserver's manifest names most of the PKI; a node without one (an etcd-only
    // member) is checked against etcd.yaml alone.
    let api = node
        .run(&format!(
            "cat {}",
            quote(&format!("{}/{}", l.manifests_dir, l.apiserver_manifest))
        ))
        .await?;
    let api_yaml = String::from_utf8_lossy(&api.stdout);
    let needed = pki_files_named(
        &[
            &etcd_yaml,
            if api.status.success() { &api_yaml } else { "" },
        ],
        &l.pki_dir,
    );
    let missing = missing_from(&needed, m);
    if !missing.is_empty() {
        return Err(PreflightError::PkiMissing {
            node: dest,
            pki_dir: l.pki_dir.clone(),
            reference: m.reference(),
            missing,
        });
    }
    check_data_dir(&member, l, &dest)?;
    let out = node
        .run(&format!("test -d {}/member", quote(&l.data_dir)))
        .await?;
    if !out.status.success() {
        return Err(PreflightError::NotADataDir {
            node: dest,
            data_dir: l.data_dir.clone(),
        });
    }
    let out = node.run(&tools_script(l)).await?;
    if !out.status.success() {
        return Err(PreflightError::Tool {
            node: dest,
            cause: said(&out),
        });
    }
    let snapshot_size = m.etcd.as_ref().map(|e| e.db_size).unwrap_or(0);
    let out = node.run(&space_script(l)).await?;
    let space = parse_space(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        PreflightError::DiskProbe {
            node: dest.clone(),
            cause: said(&out),
        }
    })?;
    check_space(&space, l, snapshot_size, &dest)?;
    let out = node
        .run(&format!("sha256sum {}/ca.crt", quote(&l.pki_dir)))
        .await?;
    let ca_sha256 = out
        .status
        .success()
        .then(|| parse_sha256(&String::from_utf8_lossy(&out.stdout)))
        .flatten();
    let etcd_version = match version::from_image(&etcd_yaml) {
        Some(v) => Some(Installed {
            version: v,
            from: format!("the etcd image in {}", etcd_manifest(l)),
        }),
        None => {
            let out = node.run("etcd --version").await?;
            out.status
                .success()
                .then(|| version::from_etcd_version_output(&String::from_utf8_lossy(&out.stdout)))
                .flatten()
                .map(|v| Installed {
                    version: v,
                    from: "`etcd --version` on the node".into(),
                })
        }
    };
    Ok(NodeFacts {
        member,
        ca_sha256,
        etcd_version,
    })
}

async fn member(
    node: &Node,
    l: &NodeLayout,
    dest: &str,
) -> Result<(Member, String), PreflightError> {
    let path = etcd_manifest(l);
    let out = node.run(&format!("cat {}", quote(&path))).await?;
    if !out.status.success() {
        return Err(PreflightError::EtcdManifest {
            node: dest.into(),
            path,
            cause: said(&out),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let member = parse_member(&text).map_err(|cause| PreflightError::Member {
        node: dest.into(),
        cause,
    })?;
    Ok((member, text))
}

/// Lists the restore journals in `staging_parent`, one file name per line (read-only).
fn journals_script(staging_parent: &str) -> String {
    format!(
        "for f in {}/cpvault-restore-*.journal; do if [ -e \"$f\" ]; then basename \"$f\"; fi; done; true",
        quote(staging_parent.trim_end_matches('/'))
    )
}

/// The restore ids of the journals `journals_script` listed.
fn unfinished(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_suffix(".journal"))
        .filter(|id| super::journal::check_id(id).is_ok())
        .map(str::to_string)
        .collect()
}

/// The files under `pki_dir` that the manifests' `- --flag=PATH` items name, relative to it
/// (kubeadm writes every certificate and key flag that way, in `command:`).
pub fn pki_files_named(manifests: &[&str], pki_dir: &str) -> std::collections::BTreeSet<String> {
    let prefix = format!("{}/", pki_dir.trim_end_matches('/'));
    manifests
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::trim))
        .map(|v| v.trim_matches(|c| c == '"' || c == '\''))
        .filter_map(|v| v.strip_prefix("--")?.split_once('=').map(|(_, p)| p))
        // A flag can list several files (`--service-account-key-file` may repeat, a CA
        // bundle flag may not), but one path per item is kubeadm's shape.
        .filter_map(|p| p.strip_prefix(&prefix))
        .filter(|rel| !rel.is_empty() && !rel.split('/').any(|c| c == ".." || c.is_empty()))
        .map(str::to_string)
        .collect()
}

/// Which of `needed` (relative to the PKI dir) the archive does not hold as `pki/<path>`.
pub fn missing_from(needed: &std::collections::BTreeSet<String>, m: &Manifest) -> Vec<String> {
    let held: std::collections::HashSet<&str> = m
        .entries
        .iter()
        .filter_map(|e| e.path.strip_prefix("pki/"))
        .collect();
    needed
        .iter()
        .filter(|p| !held.contains(p.as_str()))
        .cloned()
        .collect()
}

fn etcd_manifest(l: &NodeLayout) -> String {
    format!("{}/{}", l.manifests_dir, l.etcd_manifest)
}

/// The data dir the restore replaces must be the one this etcd runs on.
fn check_data_dir(member: &Member, l: &NodeLayout, dest: &str) -> Result<(), PreflightError> {
    match &member.data_dir {
        Some(d) if d.trim_end_matches('/') != l.data_dir.trim_end_matches('/') => {
            Err(PreflightError::DataDirMismatch {
                node: dest.into(),
                manifest: etcd_manifest(l),
                runs_on: d.clone(),
                given: l.data_dir.clone(),
            })
        }
        _ => Ok(()),
    }
}

fn tools_script(l: &NodeLayout) -> String {
    format!(
        "for t in tar sha256sum df stat mv cp chown; do command -v $t >/dev/null || {{ echo \"$t is missing\" >&2; exit 1; }}; done; ETCDCTL_API=3 {} version >/dev/null || {{ echo 'etcdctl does not run' >&2; exit 1; }}",
        l.etcdctl.command
    )
}

/// Free space (KiB) and filesystem of the staging parent and of the data dir's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Space {
    staging_kib: u64,
    data_kib: u64,
    staging_dev: u64,
    data_dev: u64,
}

fn data_parent(l: &NodeLayout) -> String {
    match l.data_dir.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((d, _)) => d.to_string(),
    }
}

fn space_script(l: &NodeLayout) -> String {
    format!(
        "df -Pk {s} {d} | awk 'NR>1 {{print $4}}'; stat -c %d {s} {d}",
        s = quote(&l.staging_parent),
        d = quote(&data_parent(l))
    )
}

fn parse_space(stdout: &str) -> Option<Space> {
    let nums: Vec<u64> = stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [staging_kib, data_kib, staging_dev, data_dev] = nums[..] else {
        return None;
    };
    Some(Space {
        staging_kib,
        data_kib,
        staging_dev,
        data_dev,
    })
}

/// The staged snapshot (plus the rest of the archive) and the restored data dir both need
/// room; on one filesystem they add up.
fn check_space(
    space: &Space,
    l: &NodeLayout,
    snapshot_size: u64,
    dest: &str,
) -> Result<(), PreflightError> {
    let mut needs = vec![(
        l.staging_parent.clone(),
        space.staging_kib,
        2 * snapshot_size,
    )];
    if space.staging_dev == space.data_dev {
        needs[0].2 += snapshot_size;
    } else {
        needs.push((data_parent(l), space.data_kib, snapshot_size));
    }
    for (dir, free_kib, need) in needs {
        if free_kib * 1024 < need {
            return Err(PreflightError::NoSpace {
                node: dest.into(),
                dir,
                free: free_kib * 1024,
                need,
            });
        }
    }
    Ok(())
}

/// The hash `sha256sum` printed; `None` for no output.
fn parse_sha256(stdout: &str) -> Option<String> {
    stdout
        .split_whitespace()
        .next()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The backup's expired certificates at `now`, as `path (notAfter …)`.
pub fn expired_certificates(m: &Manifest, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    crate::certs::expired(&m.certificates, now)
        .into_iter()
        .map(|c| {
            format!(
                "{} (notAfter {})",
                c.path,
                c.not_after
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// Refuses a backup holding a certificate that has expired by `now`, unless `force`
/// (`--force-expired`). A backup written before cpvault recorded certificate facts passes:
/// there is nothing to check.
///
/// # Errors
/// [`PreflightError::Expired`] naming every expired certificate.
pub fn certificates_valid(
    m: &Manifest,
    now: chrono::DateTime<chrono::Utc>,
    force: bool,
) -> Result<(), PreflightError> {
    let expired = expired_certificates(m, now);
    if expired.is_empty() || force {
        return Ok(());
    }
    Err(PreflightError::Expired {
        reference: m.reference(),
        expired,
    })
}

/// Whether the archive is of the node's cluster, by the CA's sha256 (the archive's from its
/// verified inner manifest); `force` (`--force-different-cluster`) accepts any answer.
///
/// # Errors
/// [`PreflightError::NodeCaUnreadable`], [`PreflightError::OtherCluster`] or
/// [`PreflightError::ArchiveHasNoCa`] unless `force`.
pub fn same_cluster(
    inner: &Manifest,
    facts: &NodeFacts,
    pki_dir: &str,
    dest: &str,
    force: bool,
) -> Result<(), PreflightError> {
    let archive_ca = inner
        .entries
        .iter()
        .find(|e| e.path == "pki/ca.crt")
        .and_then(|e| e.sha256.as_deref());
    if force {
        return Ok(());
    }
    match (archive_ca, facts.ca_sha256.as_deref()) {
        (Some(_), None) => Err(PreflightError::NodeCaUnreadable {
            node: dest.into(),
            pki_dir: pki_dir.into(),
        }),
        (Some(a), Some(n)) if a != n => Err(PreflightError::OtherCluster {
            node: dest.into(),
            pki_dir: pki_dir.into(),
        }),
        (None, _) => Err(PreflightError::ArchiveHasNoCa {
            reference: inner.reference(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
