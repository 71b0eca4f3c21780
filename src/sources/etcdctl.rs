//! The shell scripts that take an etcd snapshot with `etcdctl` on a remote machine (a node
//! over SSH, or inside the etcd pod through a Kubernetes exec), as pure functions of the
//! settings so they are tested alone. The snapshot is saved into a fresh 0700 temp dir
//! (umask 077) and streamed back with `cat`, then the dir is removed. Never
//! `snapshot save /dev/stdout`: etcdctl writes `<path>.part` and renames it over the target,
//! which would replace the machine's /dev/stdout.

use serde::Deserialize;

use crate::archive::manifest::{EtcdInfo, EtcdMember};
use crate::etcdctl::{quote, RemoteEtcdctl};

/// Prefix of the remote temp dirs; [`parse_saved`] refuses any other path so a confused
/// answer can never make the cleanup remove something else.
const TEMP_PREFIX: &str = "cpvault-snapshot.";

/// The exit code of [`save_script`] when there is no etcdctl to run (the shell's 127 is
/// not used: openssh reads it as "command not found" and hides the status).
pub const NO_ETCDCTL: i32 = 98;

/// Marks the line of [`save_script`]'s output that holds `etcdctl member list -w json`.
const MEMBERS_TAG: &str = "cpvault-members";
/// Marks the line of [`save_script`]'s output that holds `etcdctl endpoint status -w json`.
const STATUS_TAG: &str = "cpvault-status";

/// The script that saves a snapshot and prints `SIZE DIR` on its last line of stdout; before
/// it, the member list and the endpoint's status as etcdctl prints them in JSON, each on a
/// line of its own behind a tag, when etcdctl could tell them ([`parse_facts`]). On
/// failure it prints etcdctl's output to stderr, removes the dir, and exits non-zero
/// ([`NO_ETCDCTL`] when etcdctl is not there).
pub fn save_script(e: &RemoteEtcdctl) -> String {
    let ctl = e.invocation();
    format!(
        r#"set -u
umask 077
d=$(mktemp -d "${{TMPDIR:-/tmp}}/{TEMP_PREFIX}XXXXXXXX") || exit 1
{ctl} snapshot save "$d/snapshot.db" >"$d/etcdctl.log" 2>&1; rc=$?
if [ "$rc" -ne 0 ]; then
  cat "$d/etcdctl.log" >&2; rm -rf "$d"
  [ "$rc" -eq 127 ] && exit {NO_ETCDCTL}; exit 1
fi
n=$(wc -c <"$d/snapshot.db") || {{ rm -rf "$d"; exit 1; }}
m=$({ctl} member list -w json 2>/dev/null | tr -d '\n')
[ -n "$m" ] && echo "{MEMBERS_TAG} $m"
s=$({ctl} endpoint status -w json 2>/dev/null | tr -d '\n')
[ -n "$s" ] && echo "{STATUS_TAG} $s"
echo $n "$d"
"#
    )
}

/// Where a saved snapshot is and how big it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// Exact size in bytes.
    pub size: u64,
    /// The temp dir holding `snapshot.db`.
    pub dir: String,
}

/// Parses the last line of [`save_script`]'s output.
///
/// # Errors
/// A description of what was wrong when the line is not `SIZE DIR` with a dir made by the
/// script.
pub fn parse_saved(stdout: &str) -> Result<Saved, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("etcdctl printed nothing")?;
    let mut words = line.split_whitespace();
    let (Some(size), Some(dir), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("unexpected answer '{line}'"));
    };
    let size: u64 = size
        .parse()
        .map_err(|_| format!("unexpected size in '{line}'"))?;
    let name = dir.rsplit('/').next().unwrap_or("");
    let safe = dir.starts_with('/')
        && name.starts_with(TEMP_PREFIX)
        && !dir.contains("..")
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if !safe {
        return Err(format!("unexpected temp dir in '{line}'"));
    }
    // An empty snapshot still has a temp dir to remove: the caller checks the size.
    Ok(Saved {
        size,
        dir: dir.to_string(),
    })
}

/// The membership, version and ids that [`save_script`]'s output recorded: whatever etcdctl
/// could tell, nothing guessed. A line that is missing or not the JSON expected leaves its
/// fields absent.
pub fn parse_facts(stdout: &str) -> EtcdInfo {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default)]
        cluster_id: Option<u64>,
        #[serde(default)]
        member_id: Option<u64>,
    }
    #[derive(Deserialize)]
    struct PbMember {
        #[serde(rename = "ID")]
        id: u64,
        #[serde(default)]
        name: String,
        #[serde(default, rename = "peerURLs")]
        peer_urls: Vec<String>,
        #[serde(default, rename = "clientURLs")]
        client_urls: Vec<String>,
    }
    #[derive(Deserialize)]
    struct MemberList {
        members: Vec<PbMember>,
    }
    #[derive(Deserialize)]
    struct Status {
        header: Header,
        #[serde(default)]
        version: Option<String>,
    }
    #[derive(Deserialize)]
    struct EndpointStatus {
        #[serde(rename = "Status")]
        status: Status,
    }
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
    };
    let members = line(MEMBERS_TAG)
        .and_then(|j| serde_json::from_str::<MemberList>(j).ok())
        .map(|l| {
            l.members
                .into_iter()
                .map(|m| EtcdMember {
                    name: m.name,
                    id: format!("{:x}", m.id),
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                })
                .collect::<Vec<_>>()
        });
    // One endpoint was asked, so the list has one status: the member the snapshot came from.
    let status = line(STATUS_TAG)
        .and_then(|j| serde_json::from_str::<Vec<EndpointStatus>>(j).ok())
        .and_then(|v| v.into_iter().next())
        .map(|e| e.status);
    let member_id = status
        .as_ref()
        .and_then(|s| s.header.member_id)
        .map(|id| format!("{id:x}"));
    EtcdInfo {
        cluster_id: status
            .as_ref()
            .and_then(|s| s.header.cluster_id)
            .map(|id| format!("{id:x}")),
        version: status.and_then(|s| s.version).filter(|v| !v.is_empty()),
        from_member: super::etcd_grpc::member_name(members.as_deref(), member_id.as_deref()),
        member_id,
        members,
        ..EtcdInfo::default()
    }
}

/// Streams the saved snapshot to stdout.
pub fn cat_script(s: &Saved) -> String {
    format!("exec cat {}/snapshot.db", quote(&s.dir))
}

/// Removes the temp dir.
pub fn cleanup_script(s: &Saved) -> String {
    format!("rm -rf {}", quote(&s.dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> RemoteEtcdctl {
        RemoteEtcdctl {
            command: "etcdctl".into(),
            endpoint: "https://127.0.0.1:2379".into(),
            cacert: Some("/etc/kubernetes/pki/etcd/ca.crt".into()),
            cert: Some("/etc/kubernetes/pki/etcd/healthcheck-client.crt".into()),
            key: Some("/etc/kubernetes/pki/etcd/healthcheck-client.key".into()),
        }
    }

    #[test]
    fn save_script_uses_a_private_temp_dir_and_never_dev_stdout() {
        let s = save_script(&tls());
        assert!(s.contains("umask 077"));
        assert!(s.contains("mktemp -d"));
        assert!(!s.contains("/dev/stdout"));
        assert!(s.contains("--cacert=/etc/kubernetes/pki/etcd/ca.crt"));
        assert!(s.contains("--key=/etc/kubernetes/pki/etcd/healthcheck-client.key"));
        assert!(s.contains("snapshot save \"$d/snapshot.db\""));
        assert!(s.contains("-eq 127 ] && exit 98"), "{s}");
    }

    #[test]
    fn facts_are_read_from_etcdctls_json_and_absent_when_it_said_nothing() {
        // What etcdctl 3.4.23 prints, on one line each.
        let out = concat!(
            "cpvault-members {\"header\":{\"cluster_id\":324952591200643719,\"member_id\":3319814642761637952,\"raft_term\":2},",
            "\"members\":[{\"ID\":3319814642761637952,\"name\":\"a\",\"peerURLs\":[\"http://127.0.0.1:23800\"],\"clientURLs\":[\"http://127.0.0.1:23790\"]},",
            "{\"ID\":17,\"name\":\"b\",\"peerURLs\":[\"http://127.0.0.1:23801\"]}]}\n",
            "cpvault-status [{\"Endpoint\":\"http://127.0.0.1:23790\",\"Status\":{\"header\":{\"cluster_id\":324952591200643719,",
            "\"member_id\":3319814642761637952,\"revision\":1,\"raft_term\":2},\"version\":\"3.4.23\",\"dbSize\":20480,\"leader\":3319814642761637952}}]\n",
            "4128 /tmp/cpvault-snapshot.Ab12Cd34\n"
        );
        let f = parse_facts(out);
        let members = f.members.unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].id, "2e1259d415f2a040");
        assert_eq!(members[0].client_urls, ["http://127.0.0.1:23790"]);
        assert_eq!(
            (members[1].name.as_str(), members[1].id.as_str()),
            ("b", "11")
        );
        assert!(members[1].client_urls.is_empty());
        assert_eq!(f.member_id.as_deref(), Some("2e1259d415f2a040"));
        assert_eq!(f.cluster_id.as_deref(), Some("48276a8f75b6a87"));
        assert_eq!(f.version.as_deref(), Some("3.4.23"));
        assert_eq!(f.from_member.as_deref(), Some("a"));
        // Nothing said, or something else said: nothing recorded.
        assert_eq!(
            parse_facts("4128 /tmp/cpvault-snapshot.A\n"),
            EtcdInfo::default()
        );
        assert_eq!(
            parse_facts("cpvault-members not json\ncpvault-status []\n"),
            EtcdInfo::default()
        );
    }

    #[test]
    fn the_save_script_asks_for_the_members_and_the_status_on_the_same_endpoint() {
        let s = save_script(&tls());
        assert!(s.contains("member list -w json"), "{s}");
        assert!(s.contains("endpoint status -w json"), "{s}");
        // The size and dir stay the last line.
        assert!(s.trim_end().ends_with("echo $n \"$d\""), "{s}");
    }

    #[test]
    fn plain_endpoints_get_no_certificate_flags() {
        let mut e = tls();
        e.cacert = None;
        e.cert = None;
        e.key = None;
        assert!(!save_script(&e).contains("--cacert"));
    }

    #[test]
    fn parse_saved_takes_the_last_line_and_refuses_foreign_dirs() {
        let ok = parse_saved("Snapshot saved\n4128 /tmp/cpvault-snapshot.Ab12Cd34\n").unwrap();
        assert_eq!(ok.size, 4128);
        assert_eq!(ok.dir, "/tmp/cpvault-snapshot.Ab12Cd34");
        for bad in [
            "",
            "4128",
            "x /tmp/cpvault-snapshot.A",
            "10 /etc",
            "10 /tmp/../etc/cpvault-snapshot.A",
            "10 tmp/cpvault-snapshot.A",
            "10 /tmp/cpvault-snapshot.A;rm",
            "1 /tmp/cpvault-snapshot.A extra",
        ] {
            assert!(parse_saved(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cat_and_cleanup_name_only_the_temp_dir() {
        let s = Saved {
            size: 1,
            dir: "/tmp/cpvault-snapshot.X".into(),
        };
        assert_eq!(
            cat_script(&s),
            "exec cat /tmp/cpvault-snapshot.X/snapshot.db"
        );
        assert_eq!(cleanup_script(&s), "rm -rf /tmp/cpvault-snapshot.X");
    }
}
