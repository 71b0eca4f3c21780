//! `restore --to-dir`: an etcd data dir (and the PKI and files beside it) restored locally,
//! with no node. The archive is extracted verified into a work dir inside the target, restored
//! from there with the local `etcdctl snapshot restore`, and the work dir removed. It must
//! never write into a directory that already holds something.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::Usage;

/// The member flags of the local `snapshot restore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMember {
    /// `--name`.
    pub name: String,
    /// `--initial-cluster` [default: NAME=PEER].
    pub initial_cluster: Option<String>,
    /// `--initial-advertise-peer-urls` [default: `http://localhost:2380`].
    pub initial_advertise_peer_urls: Option<String>,
    /// `--skip-hash-check`, for a snapshot without etcd's sha256 trailer.
    pub skip_hash_check: bool,
}

impl LocalMember {
    /// The peer URL in effect.
    fn peer(&self) -> String {
        self.initial_advertise_peer_urls
            .clone()
            .unwrap_or_else(|| "http://localhost:2380".into())
    }

    /// The initial cluster in effect.
    fn cluster(&self) -> String {
        self.initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.peer()))
    }
}

/// `--members NAME=PEER_URL,…`: the members of a cluster restored into one data dir each,
/// all from the same snapshot with one new cluster token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// Each member's name and peer URLs, in the order given.
    pub members: Vec<(String, Vec<String>)>,
    /// The new `--initial-cluster-token` every member shares.
    pub token: String,
    /// `--skip-hash-check`, for a snapshot without etcd's sha256 trailer.
    pub skip_hash_check: bool,
}

/// Names under the target dir that are not members' data dirs.
const RESERVED: [&str; 3] = ["pki", "files", "etcd"];

impl Members {
    /// Parses `NAME=PEER_URL,…` (a name may repeat for a member with several peer URLs) and
    /// draws a new cluster token.
    ///
    /// # Errors
    /// [`Usage`] naming the item that is not `NAME=URL`, a name that cannot be a directory
    /// (or is `pki`, `files` or `etcd`, which the restore writes beside), or fewer than one.
    pub fn parse(spec: &str, skip_hash_check: bool) -> Result<Members, Usage> {
        let mut members: Vec<(String, Vec<String>)> = vec![];
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = |why: &str| {
                Usage(format!(
                    "--members: '{}' {why}; give NAME=PEER_URL,… (e.g. a=https://10.0.0.1:2380,b=https://10.0.0.2:2380)",
                    crate::text::escape_for_line(item, 200)
                ))
            };
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| bad("is not NAME=PEER_URL"))?;
            let name_ok = !name.is_empty()
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !name_ok {
                return Err(bad(
                    "has a name that cannot be a directory (letters, digits, . _ -)",
                ));
            }
            if RESERVED.contains(&name) {
                return Err(bad(
                    "uses a name the restore writes beside the members (pki, files, etcd)",
                ));
            }
            if !url.contains("://") {
                return Err(bad("has no peer URL (scheme://host:port)"));
            }
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
        if members.is_empty() {
            return Err(Usage("--members is empty; give NAME=PEER_URL,…".into()));
        }
        Ok(Members {
            members,
            token: format!("cpvault-{:016x}", rand::random::<u64>()),
            skip_hash_check,
        })
    }

    /// The `--initial-cluster` every member is restored with.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .flat_map(|(n, urls)| urls.iter().map(move |u| format!("{n}={u}")))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Restores into `dir` (`dir/etcd`, `dir/pki`, `dir/files`). `extract` writes the backup's
/// verified files into the work dir it is given — the caller's verified extraction, the one
/// place restore reads the archive for a local restore.
///
/// # Errors
/// [`Usage`] when `dir` is not empty; `extract`'s error; etcdctl missing or failing.
pub async fn to_dir<E>(dir: &Path, member: &LocalMember, extract: E) -> anyhow::Result<()>
where
    E: AsyncFnOnce(&Path) -> anyhow::Result<()>,
{
    let one = SnapshotRestore {
        name: member.name.clone(),
        data: dir.join("etcd"),
        initial_cluster: member.cluster(),
        peer_urls: member.peer(),
        token: None,
        skip_hash_check: member.skip_hash_check,
    };
    restore_into(dir, &[one], extract).await
}

/// Restores one data dir per member into `dir/NAME` (and the PKI and files into `dir/pki`,
/// `dir/files`), every member from the same snapshot, with the same initial cluster and token.
///
/// # Errors
/// As [`to_dir`]; a member that fails leaves none of the members' dirs behind.
pub async fn to_dirs<E>(dir: &Path, members: &Members, extract: E) -> anyhow::Result<()>
where
    E: AsyncFnOnce(&Path) -> anyhow::Result<()>,
{
    let cluster = members.initial_cluster();
    let each: Vec<SnapshotRestore> = members
        .members
        .iter()
        .map(|(name, urls)| SnapshotRestore {
            name: name.clone(),
            data: dir.join(name),
            initial_cluster: cluster.clone(),
            peer_urls: urls.join(","),
            token: Some(members.token.clone()),
            skip_hash_check: members.skip_hash_check,
        })
        .collect();
    restore_into(dir, &each, extract).await
}

/// One `snapshot restore` run.
struct SnapshotRestore {
    name: String,
    data: PathBuf,
    initial_cluster: String,
    peer_urls: String,
    token: Option<String>,
    skip_hash_check: bool,
}

async fn restore_into<E>(dir: &Path, each: &[SnapshotRestore], extract: E) -> anyhow::Result<()>
where
    E: AsyncFnOnce(&Path) -> anyhow::Result<()>,
{
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(Usage(format!(
            "--to-dir '{}' exists and is not empty; restore never overwrites — choose a new directory",
            dir.display()
        ))
        .into());
    }
    let work = dir.join(".cpvault-extract");
    extract(&work).await?;
    let result = restore_extracted(each, dir, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn restore_extracted(each: &[SnapshotRestore], dir: &Path, work: &Path) -> anyhow::Result<()> {
    let snapshot = work.join("etcd/snapshot.db");
    for (i, r) in each.iter().enumerate() {
        if let Err(e) = snapshot_restore(&snapshot, r) {
            // Only what this restore wrote: the data dirs made so far.
            for made in &each[..=i] {
                let _ = std::fs::remove_dir_all(&made.data);
            }
            return Err(e);
        }
    }
    for sub in ["pki", "files"] {
        if work.join(sub).exists() {
            std::fs::rename(work.join(sub), dir.join(sub))
                .with_context(|| format!("moving {sub} into {}", dir.display()))?;
        }
    }
    Ok(())
}

fn snapshot_restore(snapshot: &Path, r: &SnapshotRestore) -> anyhow::Result<()> {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg(format!("--data-dir={}", r.data.display()))
        .arg(format!("--name={}", r.name))
        .arg(format!("--initial-cluster={}", r.initial_cluster))
        .arg(format!("--initial-advertise-peer-urls={}", r.peer_urls))
        .args(r.token.as_ref().map(|t| format!("--initial-cluster-token={t}")))
        .args(r.skip_hash_check.then_some("--skip-hash-check"))
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run etcdctl ({e}); install etcd-client (it provides `etcdctl snapshot restore`)"
            )
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "etcdctl snapshot restore{} failed: {}",
            if r.token.is_some() {
                format!(" of member {}", r.name)
            } else {
                String::new()
            },
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        );
    }
    Ok(())
}

/// The version of the local `etcd` (`etcd --version`), which will run a `--to-dir` restore;
/// `None` when there is none on PATH or it says no version.
pub fn local_etcd_version() -> Option<super::version::Installed> {
    let out = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()?;
    let v = super::version::from_etcd_version_output(&String::from_utf8_lossy(&out.stdout))?;
    Some(super::version::Installed {
        version: v,
        from: "the local `etcd --version`".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_flags_default_to_one_local_member() {
        let mut m = LocalMember {
            name: "default".into(),
            initial_cluster: None,
            initial_advertise_peer_urls: None,
            skip_hash_check: false,
        };
        assert_eq!(m.cluster(), "default=http://localhost:2380");
        m.initial_advertise_peer_urls = Some("http://127.0.0.1:9".into());
        assert_eq!(m.cluster(), "default=http://127.0.0.1:9");
        m.initial_cluster = Some("a=http://x:1,b=http://y:2".into());
        assert_eq!(m.cluster(), "a=http://x:1,b=http://y:2");
    }

    #[test]
    fn members_parse_into_one_initial_cluster_and_bad_items_are_named() {
        let m = Members::parse(
            "a=http://127.0.0.1:1, b=http://127.0.0.1:2,a=http://[::1]:1",
            false,
        )
        .unwrap();
        assert_eq!(
            m.initial_cluster(),
            "a=http://127.0.0.1:1,a=http://[::1]:1,b=http://127.0.0.1:2"
        );
        assert!(
            m.token.starts_with("cpvault-") && m.token.len() == 24,
            "{}",
            m.token
        );
        assert_ne!(
            m.token,
            Members::parse("a=http://x:1", false).unwrap().token
        );
        for (bad, says) in [
            ("a", "not NAME=PEER_URL"),
            ("../x=http://h:1", "cannot be a directory"),
            (".hidden=http://h:1", "cannot be a directory"),
            ("pki=http://h:1", "writes beside"),
            ("a=h:1", "no peer URL"),
            ("", "empty"),
        ] {
            let e = Members::parse(bad, false).unwrap_err().0;
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_non_empty_dir_is_refused_before_anything_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "there").unwrap();
        let m = LocalMember {
            name: "default".into(),
            initial_cluster: None,
            initial_advertise_peer_urls: None,
            skip_hash_check: false,
        };
        let e = to_dir(dir.path(), &m, async |_: &Path| -> anyhow::Result<()> {
            panic!("extracted into a non-empty dir")
        })
        .await
        .unwrap_err();
        assert!(e.is::<Usage>(), "{e}");
    }
}
