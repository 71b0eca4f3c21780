//! A real multi-member etcd cluster on loopback: one `etcd` process per member, each on its
//! own client and peer ports, all with one `--initial-cluster`; or the same started on
//! existing (restored) data dirs. It waits until every member is healthy and they agree on one
//! leader, answers who the members and the leader are, and kills every process on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require, stderr, stdout};

/// One member's process and addresses.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    child: Child,
}

/// The cluster; see the module docs.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    _dir: Option<tempfile::TempDir>,
}

/// `NAME=http://127.0.0.1:PORT` for each member, joined as `--initial-cluster` takes them.
pub fn initial_cluster(members: &[(String, u16)]) -> String {
    members
        .iter()
        .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl EtcdCluster {
    /// A fresh cluster of members named `names`, in a temp dir of its own.
    pub fn start(names: &[&str]) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<(String, PathBuf, u16)> = names
            .iter()
            .map(|n| (n.to_string(), dir.path().join(n), free_port()))
            .collect();
        let token = format!("test-{}", rand::random::<u32>());
        let mut c = EtcdCluster::start_on(&members, Some(&token));
        c._dir = Some(dir);
        c
    }

    /// Starts one etcd per `(name, data_dir, peer_port)`; `token` for a fresh cluster, `None`
    /// on data dirs that already hold their membership (a restore's).
    pub fn start_on(members: &[(String, PathBuf, u16)], token: Option<&str>) -> EtcdCluster {
        require("etcd", "etcd-server");
        require("etcdctl", "etcd-client");
        let cluster = initial_cluster(
            &members
                .iter()
                .map(|(n, _, p)| (n.clone(), *p))
                .collect::<Vec<_>>(),
        );
        let started = members
            .iter()
            .map(|(name, data, peer)| {
                let client = format!("http://127.0.0.1:{}", free_port());
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = std::fs::File::create(data.with_extension("log")).unwrap();
                let mut cmd = Command::new("etcd");
                cmd.args([
                    "--name",
                    name,
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &cluster,
                    "--initial-cluster-state",
                    "new",
                ]);
                if let Some(t) = token {
                    cmd.args(["--initial-cluster-token", t]);
                }
                let child = cmd
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("start etcd");
                Member {
                    name: name.clone(),
                    client_url: client,
                    peer_url,
                    data_dir: data.clone(),
                    child,
                }
            })
            .collect();
        let c = EtcdCluster {
            members: started,
            _dir: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(c.all_healthy() && c.leader().is_some()) {
            assert!(
                Instant::now() < deadline,
                "the etcd cluster did not become healthy:\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `etcdctl --endpoints=<every member> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.endpoints().join(","), args)
    }

    fn all_healthy(&self) -> bool {
        self.members.iter().all(|m| {
            ctl(
                &m.client_url,
                &[
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                    "endpoint",
                    "health",
                ],
            )
            .status
            .success()
        })
    }

    /// Each member's status: (member id, leader id) as it answers.
    pub fn statuses(&self) -> Vec<(u64, u64)> {
        let o = self.ctl(&["--command-timeout=3s", "endpoint", "status", "-w", "json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) else {
            return vec![];
        };
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        let s = &e["Status"];
                        Some((s["header"]["member_id"].as_u64()?, s["leader"].as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The leader's name, when every member answers and all name the same one.
    pub fn leader(&self) -> Option<String> {
        let st = self.statuses();
        if st.len() != self.members.len() {
            return None;
        }
        let leader = st[0].1;
        if leader == 0 || st.iter().any(|(_, l)| *l != leader) {
            return None;
        }
        self.member_list()
            .into_iter()
            .find(|(id, _, _)| *id == leader)
            .map(|(_, name, _)| name)
    }

    /// The member list: (id, name, peer URLs), sorted by name.
    pub fn member_list(&self) -> Vec<(u64, String, Vec<String>)> {
        let o = self.ctl(&["member", "list", "-w", "json"]);
        assert!(o.status.success(), "member list: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut out: Vec<_> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let urls = m["peerURLs"]
                    .as_array()
                    .map(|a| a.iter().map(|u| u.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                (
                    m["ID"].as_u64().unwrap(),
                    m["name"].as_str().unwrap_or("").to_string(),
                    urls,
                )
            })
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    /// The id of the member named `name`, hex as cpvault records it.
    pub fn id_of(&self, name: &str) -> String {
        let (id, _, _) = self
            .member_list()
            .into_iter()
            .find(|(_, n, _)| n == name)
            .unwrap_or_else(|| panic!("no member {name}"));
        format!("{id:x}")
    }

    pub fn put(&self, k: &str, v: &str) {
        let o = self.ctl(&["put", k, v]);
        assert!(o.status.success(), "put: {}", stderr(&o));
    }

    /// Every key, sorted, as the member at `client_url` serves them (a serializable read, so
    /// it is that member's own data).
    pub fn keys_at(client_url: &str) -> Vec<String> {
        let o = ctl(
            client_url,
            &["get", "", "--prefix", "--keys-only", "--consistency=s"],
        );
        assert!(o.status.success(), "keys: {}", stderr(&o));
        let mut keys: Vec<String> = stdout(&o)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        keys.sort();
        keys
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            let log = std::fs::read_to_string(m.data_dir.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            s += &format!("--- {} ---\n", m.name);
            for l in tail.iter().rev() {
                s += &format!("    | {l}\n");
            }
        }
        s
    }
}

/// `etcdctl --endpoints=ENDPOINTS ARGS…` (v3, no TLS), run to its end.
pub fn ctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .unwrap()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}
