//! Preflight: read-only probes of the node before anything changes — its etcd member flags
//! (from its own `etcd.yaml`), that the data dir is the one etcd runs on and is a data dir,
//! the tools the plan's scripts use, free space, and the node's CA to compare with the
//! archive's. Each probe is a script and a pure reading of its output, so the decisions are
//! tested without a node. A probe must never change the node: every script here only reads.

use crate::archive::manifest::Manifest;
use crate::etcdctl::quote;
use crate::sources::ssh::Node;
use crate::sources::SourceError;

use super::plan::{parse_member, Member, NodeLayout};
use super::said;

/// What the probes learned about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The etcd member flags, as the node runs etcd.
    pub member: Member,
    /// sha256 of the node's `ca.crt`; `None` when it has no readable one.
    pub ca_sha256: Option<String>,
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
    let member = member(node, l, &dest).await?;
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
    Ok(NodeFacts { member, ca_sha256 })
}

async fn member(node: &Node, l: &NodeLayout, dest: &str) -> Result<Member, PreflightError> {
    let path = etcd_manifest(l);
    let out = node.run(&format!("cat {}", quote(&path))).await?;
    if !out.status.success() {
        return Err(PreflightError::EtcdManifest {
            node: dest.into(),
            path,
            cause: said(&out),
        });
    }
    parse_member(&String::from_utf8_lossy(&out.stdout)).map_err(|cause| PreflightError::Member {
        node: dest.into(),
        cause,
    })
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
mod tests {
    use super::*;

    #[test]
    fn space_adds_up_on_one_filesystem_and_splits_across_two() {
        let l = NodeLayout::kubeadm();
        let gib: u64 = 1 << 30;
        // 3 GiB free (in KiB) on both; one filesystem.
        let one_fs = parse_space("3145728\n3145728\n41\n41\n").unwrap();
        // Staging 2× + data 1× of a 1 GiB snapshot = 3 GiB: fits exactly, one byte more not.
        assert!(check_space(&one_fs, &l, gib, "n").is_ok());
        let e = check_space(&one_fs, &l, gib + 1, "n").unwrap_err();
        assert!(
            matches!(e, PreflightError::NoSpace { ref dir, .. } if dir == "/var/tmp"),
            "{e}"
        );
        // Two filesystems: staging's 2 GiB fit, but the data dir's has 10 KiB.
        let two_fs = parse_space("3145728 10 41 42").unwrap();
        let e = check_space(&two_fs, &l, gib, "n").unwrap_err();
        assert!(
            matches!(e, PreflightError::NoSpace { ref dir, .. } if dir == "/var/lib"),
            "{e}"
        );
        assert_eq!(parse_space("df: /nope: No such file\n"), None);
    }

    #[test]
    fn the_data_dir_must_be_the_one_etcd_runs_on() {
        let l = NodeLayout::kubeadm();
        let mut m = Member {
            name: "n".into(),
            initial_cluster: "n=https://a:2380".into(),
            initial_advertise_peer_urls: "https://a:2380".into(),
            data_dir: Some("/var/lib/etcd/".into()),
        };
        assert!(check_data_dir(&m, &l, "n").is_ok());
        m.data_dir = Some("/data/etcd".into());
        let e = check_data_dir(&m, &l, "n").unwrap_err().to_string();
        assert!(
            e.contains("--data-dir=/data/etcd") && e.contains("pass --etcd-data-dir /data/etcd"),
            "{e}"
        );
        m.data_dir = None;
        assert!(check_data_dir(&m, &l, "n").is_ok());
    }

    #[test]
    fn sha256sum_output_reads_as_its_hash() {
        assert_eq!(
            parse_sha256("abc123  /etc/kubernetes/pki/ca.crt\n").as_deref(),
            Some("abc123")
        );
        assert_eq!(parse_sha256(""), None);
    }

    fn inner(ca: Option<&str>) -> Manifest {
        let mut entries = vec![
            serde_json::json!({"path": "etcd/snapshot.db", "kind": "etcd-snapshot", "size": 1, "sha256": "s"}),
        ];
        if let Some(h) = ca {
            entries.push(
                serde_json::json!({"path": "pki/ca.crt", "kind": "pki", "size": 1, "sha256": h}),
            );
        }
        serde_json::from_value(serde_json::json!({
            "format": "cpvault-manifest", "version": 1, "id": "20260101T000000Z-00000000",
            "cluster": "c", "created": "2026-01-01T00:00:00Z", "completed": "2026-01-01T00:00:00Z",
            "tool": {"name": "cpvault", "version": "0"}, "host": "h", "source": "s",
            "entries": entries,
        }))
        .unwrap()
    }

    #[test]
    fn the_ca_decides_whether_the_backup_is_of_this_cluster_unless_forced() {
        let member = Member {
            name: "n".into(),
            initial_cluster: "n=https://a:2380".into(),
            initial_advertise_peer_urls: "https://a:2380".into(),
            data_dir: None,
        };
        let facts = |ca: Option<&str>| NodeFacts {
            member: member.clone(),
            ca_sha256: ca.map(str::to_string),
        };
        let check = |archive: Option<&str>, node: Option<&str>, force: bool| {
            same_cluster(&inner(archive), &facts(node), "/pki", "n", force)
        };
        assert!(check(Some("aa"), Some("aa"), false).is_ok());
        assert!(matches!(
            check(Some("aa"), Some("bb"), false),
            Err(PreflightError::OtherCluster { .. })
        ));
        assert!(matches!(
            check(Some("aa"), None, false),
            Err(PreflightError::NodeCaUnreadable { .. })
        ));
        assert!(matches!(
            check(None, Some("aa"), false),
            Err(PreflightError::ArchiveHasNoCa { .. })
        ));
        for (a, n) in [(Some("aa"), Some("bb")), (Some("aa"), None), (None, None)] {
            assert!(check(a, n, true).is_ok());
        }
    }
}
