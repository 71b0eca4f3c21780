//! etcd through the SSH connection: `Maintenance.Snapshot` over gRPC to the node's own etcd,
//! carried by a port forward of the one SSH connection cpvault already holds, so nothing is
//! needed on the node but sshd (and `sudo`, `cat`, `wc` to read the certificates). Where
//! etcd listens and which certificates it trusts are read from its static-pod manifest
//! (kubeadm's layout), each overridable by a `--node-etcd-*` setting; the client certificate,
//! key and CA are read over SSH into memory and never written to local disk. The server
//! certificate is checked against the host of `--advertise-client-urls`, the name it was
//! issued for, although the bytes travel through a local socket. This module changes nothing
//! on the node and never falls back to an unchecked TLS connection.

use std::path::PathBuf;

use tokio::net::UnixStream;
use zeroize::Zeroizing;

use super::etcd_dial::{self, explain_relayed, Answered, DialError};
use super::etcd_grpc::{self, Flags, TlsPem};
use super::ssh::Node;
use super::{SourceEntry, SourceError};
use crate::etcdctl::{quote, static_pod_flag};

/// The node settings' flags, for messages.
pub const NODE: Flags = Flags {
    endpoint: "--node-etcd-endpoint",
    cacert: "--node-etcd-cacert",
    cert: "--node-etcd-cert",
    key: "--node-etcd-key",
};

/// The settings that override what etcd's manifest says; an empty certificate path means
/// "none" (a plain-http etcd, or one without client certificates).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--node-etcd-endpoint`.
    pub endpoint: Option<String>,
    /// `--node-etcd-cacert`.
    pub cacert: Option<String>,
    /// `--node-etcd-cert`.
    pub cert: Option<String>,
    /// `--node-etcd-key`.
    pub key: Option<String>,
}

impl Overrides {
    /// Whether every value is given, so the manifest is not needed at all.
    pub fn complete(&self) -> bool {
        self.endpoint.is_some()
            && self.cacert.is_some()
            && self.cert.is_some()
            && self.key.is_some()
    }
}

/// How to reach the node's etcd, as decided by [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEtcd {
    /// etcd's client URL as seen from the node: the far end of the tunnel.
    pub endpoint: String,
    /// Its host, as ssh's `-L` wants it (IPv6 in brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The name the server certificate must be valid for (`None`: plain http).
    pub server_name: Option<String>,
    /// CA certificate path on the node.
    pub cacert: Option<String>,
    /// Client certificate path on the node.
    pub cert: Option<String>,
    /// Client key path on the node.
    pub key: Option<String>,
}

/// Where an URL points: scheme, host (IPv6 in brackets) and port.
pub(super) fn split_url(u: &str) -> Result<(String, String, u16), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("'{u}' is not a URL ({e})"))?;
    let scheme = parsed.scheme().to_string();
    if scheme != "https" && scheme != "http" {
        return Err(format!("'{u}' is not an http(s) URL"));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("'{u}' has no host"))?
        .to_string();
    Ok((scheme, host, parsed.port().unwrap_or(2379)))
}

/// The URLs of a comma-separated flag value (etcd's `--listen-client-urls` and the like).
pub(super) fn url_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

pub(super) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A listen address that takes every interface is reached on loopback from the node itself.
fn reachable_from_node(url: &str) -> String {
    url.replacen("://0.0.0.0", "://127.0.0.1", 1)
        .replacen("://[::]", "://[::1]", 1)
}

/// Decides the endpoint, the TLS server name and the certificate paths from etcd's
/// manifest (`None` when it was not read because `o` gives everything) and the overrides.
/// The endpoint is a loopback client URL when the manifest lists one (the tunnel ends on the
/// node, so loopback is the shortest way and the one always served), else the first
/// advertised one; the server name is the host etcd advertises, the name its certificate is
/// issued for; the client pair is kubeadm's `healthcheck-client` next to the CA.
///
/// # Errors
/// What is missing or malformed, naming the setting that would supply it.
pub fn resolve(manifest: Option<&str>, o: &Overrides) -> Result<NodeEtcd, String> {
    let list = |flag: &str| -> Vec<String> {
        manifest
            .and_then(|m| static_pod_flag(m, flag))
            .map(|v| url_list(&v))
            .unwrap_or_default()
    };
    let advertised = list("advertise-client-urls");
    let listened: Vec<String> = list("listen-client-urls")
        .iter()
        .map(|u| reachable_from_node(u))
        .collect();
    let endpoint = match &o.endpoint {
        Some(e) => e.clone(),
        None => {
            let all: Vec<&String> = advertised.iter().chain(&listened).collect();
            let loopback = all
                .iter()
                .find(|u| split_url(u).is_ok_and(|(_, h, _)| is_loopback(&h)));
            loopback
                .or(all.first())
                .map(|u| u.to_string())
                .ok_or_else(|| {
                    "etcd.yaml names no --advertise-client-urls or --listen-client-urls; give --node-etcd-endpoint URL".to_string()
                })?
        }
    };
    let (scheme, host, port) = split_url(&endpoint)
        .map_err(|e| format!("{e}; give --node-etcd-endpoint as https://HOST:PORT"))?;
    if scheme == "http" {
        return Ok(NodeEtcd {
            endpoint,
            host,
            port,
            server_name: None,
            cacert: None,
            cert: None,
            key: None,
        });
    }
    let server_host = match advertised.first() {
        Some(a) => split_url(a)?.1,
        None => host.clone(),
    };
    let server_name = server_host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let given = |v: &Option<String>| v.as_ref().map(|p| (!p.is_empty()).then(|| p.clone()));
    let manifest_ca = manifest.and_then(|m| static_pod_flag(m, "trusted-ca-file"));
    let cacert = match given(&o.cacert) {
        Some(v) => v,
        None => Some(manifest_ca.clone().ok_or(
            "etcd.yaml has no --trusted-ca-file; give --node-etcd-cacert PATH (a path on the node)",
        )?),
    };
    // kubeadm keeps the healthcheck client pair next to etcd's CA.
    let dir = cacert
        .as_deref()
        .or(manifest_ca.as_deref())
        .and_then(|c| c.rsplit_once('/').map(|(d, _)| d.to_string()))
        .unwrap_or_else(|| "/etc/kubernetes/pki/etcd".into());
    let cert = given(&o.cert).unwrap_or_else(|| Some(format!("{dir}/healthcheck-client.crt")));
    let key = given(&o.key).unwrap_or_else(|| Some(format!("{dir}/healthcheck-client.key")));
    if cert.is_some() != key.is_some() {
        return Err(
            "--node-etcd-cert and --node-etcd-key go together: give both or neither".into(),
        );
    }
    Ok(NodeEtcd {
        endpoint,
        host,
        port,
        server_name: Some(server_name),
        cacert,
        cert,
        key,
    })
}

/// What the tunnel source needs from the settings.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    /// The static-pod manifests dir on the node.
    pub manifests_dir: String,
    /// The `--node-etcd-*` overrides.
    pub overrides: Overrides,
}

/// Largest file read from the node here: certificates and manifests are a few KiB, and a
/// wrong path must not stream a disk image into memory.
const FILE_LIMIT: u64 = 1024 * 1024;

/// The script that prints a small file, refusing a large or missing one with a message.
fn read_script(path: &str) -> String {
    format!(
        "f={}; n=$(wc -c <\"$f\") || exit 1; [ \"$n\" -le {FILE_LIMIT} ] || {{ echo \"$f is larger than 1 MiB\" >&2; exit 1; }}; exec cat \"$f\"",
        quote(path)
    )
}

/// Reads `path` on the node (under sudo when the node needs it) into memory that is wiped
/// when dropped.
async fn read_node_file(
    node: &Node,
    what: &str,
    path: &str,
    fix: &str,
) -> Result<Zeroizing<Vec<u8>>, SourceError> {
    let out = node.run(&read_script(path)).await?;
    let data = Zeroizing::new(out.stdout);
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        return Err(SourceError::Ssh {
            destination: node.destination(),
            message: format!("cannot read {what} {path} on the node ({said})"),
            fix: fix.into(),
        });
    }
    Ok(data)
}

/// Takes the snapshot of the node's etcd through the SSH connection: reads etcd's manifest
/// (unless the overrides say everything), the certificates into memory, forwards a private
/// local socket to etcd's client URL on the node, and streams `Maintenance.Snapshot` as the
/// direct gRPC source does.
///
/// # Errors
/// [`SourceError::Ssh`] when the manifest or a certificate cannot be read on the node or
/// the forward cannot be set up; [`SourceError::Etcd`] naming the endpoint and the
/// `--node-etcd-*` setting to fix when etcd is unreachable behind the tunnel or refuses the
/// certificates.
pub async fn snapshot(
    node: &Node,
    t: &TunnelSettings,
) -> Result<(SourceEntry, String), SourceError> {
    let manifest_path = format!("{}/etcd.yaml", t.manifests_dir.trim_end_matches('/'));
    let manifest = if t.overrides.complete() {
        None
    } else {
        let m = read_node_file(
            node,
            "etcd's static-pod manifest",
            &manifest_path,
            "point --ssh-manifests-dir at the node's static-pod manifests, or give --node-etcd-endpoint, --node-etcd-cacert, --node-etcd-cert and --node-etcd-key",
        )
        .await?;
        Some(String::from_utf8_lossy(&m).into_owned())
    };
    let ne = resolve(manifest.as_deref(), &t.overrides).map_err(|m| SourceError::Ssh {
        destination: node.destination(),
        message: format!("{manifest_path}: {m}"),
        fix: "or point --ssh-manifests-dir at the node's static-pod manifests".into(),
    })?;
    let mut pem = TlsPem {
        server_name: ne.server_name.clone(),
        ..TlsPem::default()
    };
    let cert_fix = |flag: &str| {
        format!("check {flag} (a path on the node) and that the SSH user may read it, with sudo unless it is root (--ssh-sudo)")
    };
    if let Some(ca) = &ne.cacert {
        pem.ca = Some(
            read_node_file(node, "etcd's CA certificate", ca, &cert_fix(NODE.cacert))
                .await?
                .to_vec(),
        );
    }
    if let (Some(c), Some(k)) = (&ne.cert, &ne.key) {
        let cert =
            read_node_file(node, "the etcd client certificate", c, &cert_fix(NODE.cert)).await?;
        let key = read_node_file(node, "the etcd client key", k, &cert_fix(NODE.key)).await?;
        pem.identity = Some((cert.to_vec(), key));
    }
    let label = format!("{} on {} through SSH", ne.endpoint, node.destination());
    let tunnel = Tunnel::open(node, &ne).await?;
    let entry = connect_and_stream(&ne, &pem, &label, tunnel).await?;
    Ok((entry, ne.endpoint))
}

/// The local end of the forward: a socket in a fresh 0700 dir, so that only this user can
/// reach the node's etcd through it for as long as the backup runs. (A loopback TCP port
/// would let any local user do so, and `ssh -W` would cost a process per connection.)
struct Tunnel {
    socket: PathBuf,
    // Removed (with the socket) when the snapshot stream ends; the forward itself ends with
    // the SSH connection.
    _dir: tempfile::TempDir,
}

impl Tunnel {
    async fn open(node: &Node, ne: &NodeEtcd) -> Result<Tunnel, SourceError> {
        let dir = tempfile::Builder::new()
            .prefix("cpvault-tunnel.")
            .tempdir()
            .map_err(|e| SourceError::Ssh {
                destination: node.destination(),
                message: format!("cannot make a private dir for the tunnel's socket: {e}"),
                fix: "check that TMPDIR is writable".into(),
            })?;
        let socket = dir.path().join("etcd.sock");
        node.forward_unix(&socket, &ne.host, ne.port).await?;
        Ok(Tunnel { socket, _dir: dir })
    }
}

async fn connect_and_stream(
    ne: &NodeEtcd,
    pem: &TlsPem,
    label: &str,
    tunnel: Tunnel,
) -> Result<SourceEntry, SourceError> {
    let tls = ne.server_name.is_some();
    let answered = Answered::default();
    let fail = {
        let answered = answered.clone();
        let label = label.to_string();
        let server_name = ne.server_name.clone();
        move |e: etcd_client::Error| explain(&label, tls, &answered, server_name.as_deref(), &e)
    };
    let socket = tunnel.socket.clone();
    let client = etcd_dial::dial(&ne.endpoint, pem, &answered, move || {
        UnixStream::connect(socket.clone())
    })
    .await
    .map_err(|e| match e {
        // Before anything is dialled, an error is the settings', not the tunnel's.
        DialError::Setup(e) => etcd_grpc::explain(label, tls, &NODE, &e),
        DialError::Timeout(t) => SourceError::Etcd {
            endpoint: label.to_string(),
            message: format!("no answer within {}s", t.as_secs()),
            fix: unreachable_fix(),
        },
        DialError::Connect(e) => fail(e),
    })?;
    etcd_grpc::stream(client, label, &NODE, fail, Box::new(tunnel)).await
}

fn unreachable_fix() -> String {
    "check that etcd runs on the node and that --node-etcd-endpoint (default: from etcd.yaml) is its client URL as seen from the node; the node's sshd must allow TCP forwarding (AllowTcpForwarding)".into()
}

/// Explains a failure behind the tunnel: a far end that never said a byte was not reached
/// (ssh accepts the local connection, then closes it when the node cannot connect), which
/// no TLS message would show; otherwise the direct source's reading with the node's flags.
fn explain(
    label: &str,
    tls: bool,
    answered: &Answered,
    server_name: Option<&str>,
    err: &etcd_client::Error,
) -> SourceError {
    explain_relayed(
        etcd_grpc::explain(label, tls, &NODE, err),
        label,
        "the tunnel",
        answered,
        unreachable_fix,
        || {
            format!(
                "etcd's server certificate is not issued for {}, the host of etcd.yaml's --advertise-client-urls; check the node's etcd certificates",
                server_name.unwrap_or("the advertised host")
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = "spec:\n  containers:\n  - command:\n    - etcd\n    - --advertise-client-urls=https://10.0.0.5:2379\n    - --cert-file=/etc/kubernetes/pki/etcd/server.crt\n    - --client-cert-auth=true\n    - --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379\n    - --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt\n";

    #[test]
    fn kubeadm_manifest_gives_loopback_endpoint_advertised_name_and_healthcheck_pair() {
        let ne = resolve(Some(KUBEADM), &Overrides::default()).unwrap();
        assert_eq!(ne.endpoint, "https://127.0.0.1:2379");
        assert_eq!((ne.host.as_str(), ne.port), ("127.0.0.1", 2379));
        assert_eq!(ne.server_name.as_deref(), Some("10.0.0.5"));
        assert_eq!(
            ne.cacert.as_deref(),
            Some("/etc/kubernetes/pki/etcd/ca.crt")
        );
        assert_eq!(
            ne.cert.as_deref(),
            Some("/etc/kubernetes/pki/etcd/healthcheck-client.crt")
        );
        assert_eq!(
            ne.key.as_deref(),
            Some("/etc/kubernetes/pki/etcd/healthcheck-client.key")
        );
    }

    #[test]
    fn without_a_loopback_url_the_first_advertised_one_is_used() {
        let m = "- --advertise-client-urls=https://node1.example:2379,https://10.0.0.5:2379\n- --listen-client-urls=https://10.0.0.5:2379\n- --trusted-ca-file=/pki/ca.pem\n";
        let ne = resolve(Some(m), &Overrides::default()).unwrap();
        assert_eq!(ne.endpoint, "https://node1.example:2379");
        assert_eq!(ne.server_name.as_deref(), Some("node1.example"));
        assert_eq!(ne.cert.as_deref(), Some("/pki/healthcheck-client.crt"));
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let m = "- --advertise-client-urls=https://10.0.0.5:2379\n- --listen-client-urls=https://0.0.0.0:2379\n- --trusted-ca-file=/pki/ca.crt\n";
        let ne = resolve(Some(m), &Overrides::default()).unwrap();
        assert_eq!(ne.endpoint, "https://127.0.0.1:2379");
        assert_eq!(ne.server_name.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn overrides_win_and_an_empty_path_drops_the_client_pair() {
        let o = Overrides {
            endpoint: Some("https://[::1]:12379".into()),
            cacert: Some("/other/ca.crt".into()),
            cert: Some(String::new()),
            key: Some(String::new()),
        };
        assert!(o.complete());
        let ne = resolve(None, &o).unwrap();
        assert_eq!((ne.host.as_str(), ne.port), ("[::1]", 12379));
        assert_eq!(ne.server_name.as_deref(), Some("::1"));
        assert_eq!(ne.cacert.as_deref(), Some("/other/ca.crt"));
        assert_eq!((ne.cert, ne.key), (None, None));
    }

    #[test]
    fn plain_http_needs_no_certificates() {
        let m = "- --listen-client-urls=http://127.0.0.1:2379\n";
        let ne = resolve(Some(m), &Overrides::default()).unwrap();
        assert_eq!(ne.server_name, None);
        assert_eq!((ne.cacert, ne.cert, ne.key), (None, None, None));
    }

    #[test]
    fn what_is_missing_names_the_setting() {
        let e = resolve(Some("- etcd\n"), &Overrides::default()).unwrap_err();
        assert!(e.contains("--node-etcd-endpoint"), "{e}");
        let e = resolve(
            Some("- --listen-client-urls=https://127.0.0.1:2379\n"),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.contains("--trusted-ca-file") && e.contains("--node-etcd-cacert"),
            "{e}"
        );
        let o = Overrides {
            cert: Some("/c".into()),
            key: Some(String::new()),
            ..Overrides::default()
        };
        let e = resolve(Some(KUBEADM), &o).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let o = Overrides {
            endpoint: Some("unix:///run/etcd.sock".into()),
            ..Overrides::default()
        };
        assert!(resolve(Some(KUBEADM), &o)
            .unwrap_err()
            .contains("--node-etcd-endpoint"));
    }

    #[test]
    fn the_read_script_quotes_the_path_and_caps_the_size() {
        let s = read_script("/etc/kubernetes/pki/etcd/it's.key");
        assert!(
            s.starts_with("f='/etc/kubernetes/pki/etcd/it'\\''s.key';"),
            "{s}"
        );
        assert!(
            s.contains("-le 1048576") && s.ends_with("exec cat \"$f\""),
            "{s}"
        );
    }
}
