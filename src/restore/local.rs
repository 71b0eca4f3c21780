//! `restore --to-dir`: an etcd data dir (and the PKI and files beside it) restored locally,
//! with no node. The archive is extracted verified into a work dir inside the target, restored
//! from there with the local `etcdctl snapshot restore`, and the work dir removed. It must
//! never write into a directory that already holds something.

use std::path::Path;

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
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(Usage(format!(
            "--to-dir '{}' exists and is not empty; restore never overwrites — choose a new directory",
            dir.display()
        ))
        .into());
    }
    let work = dir.join(".cpvault-extract");
    extract(&work).await?;
    let result = restore_extracted(member, dir, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn restore_extracted(member: &LocalMember, dir: &Path, work: &Path) -> anyhow::Result<()> {
    let data = dir.join("etcd");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(work.join("etcd/snapshot.db"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--name={}", member.name))
        .arg(format!("--initial-cluster={}", member.cluster()))
        .arg(format!("--initial-advertise-peer-urls={}", member.peer()))
        .args(member.skip_hash_check.then_some("--skip-hash-check"))
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run etcdctl ({e}); install etcd-client (it provides `etcdctl snapshot restore`)"
            )
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "etcdctl snapshot restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        );
    }
    for sub in ["pki", "files"] {
        if work.join(sub).exists() {
            std::fs::rename(work.join(sub), dir.join(sub))
                .with_context(|| format!("moving {sub} into {}", dir.display()))?;
        }
    }
    Ok(())
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
