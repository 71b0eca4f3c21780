//! The etcd member a node runs, as its own `etcd.yaml` says (`--name`, `--initial-cluster`,
//! `--initial-advertise-peer-urls`, `--data-dir`): what `snapshot restore` is given for that
//! node. Pure: reads a manifest's text and never reaches a node.

use serde::Serialize;

/// The member flags `snapshot restore` needs, as the node's etcd runs with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// `--name`.
    pub name: String,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: String,
    /// `--data-dir`, when the manifest sets it.
    pub data_dir: Option<String>,
    /// `--initial-cluster-token` for `snapshot restore`: set (one new token shared by every
    /// member) when several members are restored together; a node restored alone keeps
    /// etcd's default, as it always did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster_token: Option<String>,
}

impl Member {
    /// The member names `--initial-cluster` lists (`NAME=URL,…`; a name with several peer
    /// URLs appears once), in its order.
    pub fn initial_members(&self) -> Vec<String> {
        let mut names: Vec<String> = vec![];
        for item in self.initial_cluster.split(',') {
            let name = item.split_once('=').map_or(item, |(n, _)| n).trim();
            if !name.is_empty() && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        names
    }

    /// The members `--initial-cluster` lists besides this one.
    pub fn other_members(&self) -> Vec<String> {
        let mut others = self.initial_members();
        others.retain(|n| *n != self.name);
        others
    }

    /// This member alone as a cluster: `--initial-cluster` naming only itself, at each of its
    /// peer URLs.
    pub fn alone(&self) -> Member {
        let initial_cluster = self
            .initial_advertise_peer_urls
            .split(',')
            .map(|u| format!("{}={}", self.name, u.trim()))
            .collect::<Vec<_>>()
            .join(",");
        Member {
            initial_cluster,
            ..self.clone()
        }
    }
}

/// Reads the member flags from a static-pod manifest's command list (`- --name=node1`).
///
/// # Errors
/// Names the flag that is missing.
pub fn parse_member(etcd_yaml: &str) -> Result<Member, String> {
    let flag = |name: &str| -> Result<String, String> {
        crate::etcdctl::static_pod_flag(etcd_yaml, name)
            .ok_or_else(|| format!("etcd.yaml has no --{name}=… in its command"))
    };
    if let Ok(wal) = flag("wal-dir") {
        return Err(wal_dir_unsupported("etcd.yaml", &wal));
    }
    Ok(Member {
        name: flag("name")?,
        initial_cluster: flag("initial-cluster")?,
        initial_advertise_peer_urls: flag("initial-advertise-peer-urls")?,
        data_dir: flag("data-dir").ok(),
        initial_cluster_token: None,
    })
}

/// etcd with `--wal-dir` keeps its write-ahead log outside the data dir: it would pair the old
/// WAL there with the restored snapshot, so such a member is not restored.
pub fn wal_dir_unsupported(what: &str, wal: &str) -> String {
    format!(
        "{what} sets --wal-dir={} (a WAL outside the data dir), which restore does not handle: etcd would replay the old WAL over the restored data; move the WAL back into the data dir (drop --wal-dir) or restore with --to-dir and place the data by hand",
        crate::text::escape_for_line(wal, 200)
    )
}
