//! etcd through the Kubernetes API alone: `Maintenance.Snapshot` over gRPC, carried by the API
//! server's port-forward to the etcd pod, for when neither a shell in the pod nor SSH to the
//! node is available. Which port and which TLS server name are read from the etcd
//! container's command line (`--listen-client-urls`, `--advertise-client-urls`), each
//! overridable; the CA and the client certificate and key are local files the user gives,
//! read into memory only. The port-forward reaches the port on localhost inside the pod,
//! while the server certificate is checked for the name etcd advertises. This module only
//! reads: it changes nothing in the cluster and never falls back to an unchecked connection.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::etcd_dial::{self, explain_relayed, Answered, DialError};
use super::etcd_grpc::{self, EtcdEndpoint, Flags};
use super::etcd_tunnel::{is_loopback, split_url, url_list};
use super::kube::{Cluster, EtcdPod, ForwardError};
use super::{SourceEntry, SourceError};

/// The flags a message points the user at.
pub const FLAGS: Flags = Flags {
    endpoint: "--etcd-pod-port",
    cacert: "--etcd-cacert",
    cert: "--etcd-cert",
    key: "--etcd-key",
};

/// What the port-forward source needs from the settings.
#[derive(Debug, Clone)]
pub struct PortForwardSettings {
    /// `--etcd-pod-port` (default: from the pod's command line).
    pub port: Option<u16>,
    /// `--etcd-server-name` (default: from the pod's command line).
    pub server_name: Option<String>,
    /// `--etcd-cacert`.
    pub cacert: PathBuf,
    /// `--etcd-cert`.
    pub cert: PathBuf,
    /// `--etcd-key`.
    pub key: PathBuf,
}

/// Where the forward goes and what TLS checks, as decided by [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEtcd {
    /// The pod's port forwarded to.
    pub port: u16,
    /// Whether etcd serves TLS there.
    pub tls: bool,
    /// The name the server certificate must be valid for.
    pub server_name: String,
    /// Where that name came from, for messages.
    pub name_from: &'static str,
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "[::]" | "::")
}

/// Decides the port and the TLS server name from the etcd container's command line and the
/// overrides. The port is that of a client URL on loopback or all interfaces (the API
/// server's port-forward connects to localhost inside the pod), else of the first client
/// URL, else etcd's 2379; the server name is the host etcd advertises, the name its
/// certificate is issued for.
///
/// # Errors
/// A client URL that cannot be read, naming the setting that would replace it.
pub fn resolve(
    command: &[String],
    port: Option<u16>,
    server_name: Option<&str>,
) -> Result<PodEtcd, String> {
    let words = crate::etcdctl::command_words(command.iter().flat_map(|a| a.split_whitespace()));
    let list = |flag: &str| -> Vec<String> {
        crate::etcdctl::command_flag(&words, flag)
            .map(|v| url_list(&v))
            .unwrap_or_default()
    };
    let listened = list("listen-client-urls");
    let advertised = list("advertise-client-urls");
    let local = listened
        .iter()
        .find(|u| split_url(u).is_ok_and(|(_, h, _)| is_loopback(&h) || is_wildcard(&h)));
    let chosen = match local.or(listened.first()).or(advertised.first()) {
        Some(u) => Some(split_url(u).map_err(|e| {
            format!("{e} in the etcd container's command; give --etcd-pod-port PORT")
        })?),
        None => None,
    };
    let (tls, url_port, listen_host) = match &chosen {
        Some((scheme, host, p)) => (scheme == "https", *p, Some(host.as_str())),
        None => (true, 2379, None),
    };
    let advertised_host = match advertised.first() {
        Some(a) => Some(split_url(a).map_err(|e| {
            format!(
                "{e} in the etcd container's --advertise-client-urls; give --etcd-server-name NAME"
            )
        })?),
        None => None,
    };
    let (name, name_from) = match (server_name, &advertised_host, listen_host) {
        (Some(n), _, _) => (n.to_string(), "given with --etcd-server-name"),
        (None, Some((_, h, _)), _) => (h.clone(), "the host of the pod's --advertise-client-urls"),
        (None, None, Some(h)) if !is_wildcard(h) => {
            (h.to_string(), "the host of the pod's --listen-client-urls")
        }
        _ => ("localhost".to_string(), "the default"),
    };
    Ok(PodEtcd {
        port: port.unwrap_or(url_port),
        tls,
        server_name: name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        name_from,
    })
}

/// What the error channels of the forwards said: the first message, and how many forwards
/// have not yet ended.
#[derive(Clone, Default)]
struct Said {
    message: Arc<Mutex<Option<String>>>,
    pending: Arc<AtomicUsize>,
}

impl Said {
    fn watch(&self, error: ForwardError) {
        let me = self.clone();
        me.pending.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            if let Some(m) = error.await.filter(|m| !m.trim().is_empty()) {
                let mut slot = me.message.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    *slot = Some(m);
                }
            }
            me.pending.fetch_sub(1, Ordering::SeqCst);
        });
    }

    fn get(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a failure: waits (briefly) for what a failed forward says, which arrives on
    /// its own channel just before the forward closes.
    async fn settle(&self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.get().is_none()
            && self.pending.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.get()
    }
}

/// Takes the snapshot of the pod's etcd through the API server's port-forward: decides the
/// port and server name, reads the certificates into memory, opens the first forward (so
/// that a refused port-forward is told as such), and streams `Maintenance.Snapshot` as the
/// direct gRPC source does. Returns the entry and the port.
///
/// # Errors
/// [`SourceError::Kube`] when the port-forward is refused (naming `pods/portforward` and
/// the verbs); [`SourceError::Etcd`] naming the flag to fix when a certificate cannot be
/// read or is not accepted, or nothing listens on the pod's port.
pub async fn snapshot(
    cluster: &Cluster,
    pod: &EtcdPod,
    s: &PortForwardSettings,
) -> Result<(SourceEntry, u16), SourceError> {
    let place = format!("pod {}/{}", pod.namespace, pod.name);
    let pe =
        resolve(&pod.args, s.port, s.server_name.as_deref()).map_err(|m| SourceError::Kube {
            message: format!("{place}: {m}"),
            fix: "give --etcd-pod-port PORT and --etcd-server-name NAME".into(),
        })?;
    let mut pem = etcd_grpc::local_tls(&EtcdEndpoint {
        endpoints: vec![],
        cacert: Some(s.cacert.clone()),
        cert: Some(s.cert.clone()),
        key: Some(s.key.clone()),
    })?;
    pem.server_name = Some(pe.server_name.clone());
    let label = format!(
        "{place} port {} through the API server's port-forward",
        pe.port
    );
    let forward = cluster.forward(pod, pe.port);
    let (first, first_error) = forward.open().await?;
    let said = Said::default();
    said.watch(first_error);
    let slot = Arc::new(Mutex::new(Some(first)));
    let open = {
        let said = said.clone();
        move || {
            let (forward, said, slot) = (forward.clone(), said.clone(), slot.clone());
            async move {
                let ready = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(stream) = ready {
                    return Ok::<_, io::Error>(stream);
                }
                // The channel reconnects: a forward of its own for each connection.
                let (stream, error) = forward
                    .open()
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))?;
                said.watch(error);
                Ok::<_, io::Error>(stream)
            }
        }
    };
    let host = if pe.server_name.contains(':') {
        format!("[{}]", pe.server_name)
    } else {
        pe.server_name.clone()
    };
    let url = format!(
        "{}://{host}:{}",
        if pe.tls { "https" } else { "http" },
        pe.port
    );
    let answered = Answered::default();
    let client = match etcd_dial::dial(&url, &pem, &answered, open).await {
        Ok(c) => c,
        Err(e) => {
            let said = said.settle().await;
            return Err(match e {
                DialError::Setup(e) => etcd_grpc::explain(&label, pe.tls, &FLAGS, &e),
                DialError::Timeout(t) => SourceError::Etcd {
                    endpoint: label,
                    message: format!(
                        "no answer within {}s{}",
                        t.as_secs(),
                        said.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                    fix: not_listening_fix(&pe),
                },
                DialError::Connect(e) => explain(&label, &pe, &answered, said, &e),
            });
        }
    };
    let fail = {
        let (label, pe) = (label.clone(), pe.clone());
        move |e: etcd_client::Error| explain(&label, &pe, &answered, said.get(), &e)
    };
    let entry = etcd_grpc::stream(client, &label, &FLAGS, fail, Box::new(())).await?;
    Ok((entry, pe.port))
}

fn not_listening_fix(pe: &PodEtcd) -> String {
    format!(
        "the port-forward reaches etcd on localhost inside the pod: check that the etcd container listens on port {} there (a loopback or 0.0.0.0 URL in its --listen-client-urls), or give --etcd-pod-port PORT",
        pe.port
    )
}

/// Explains a failure through the port-forward: what the API server said on the error
/// channel (it could not connect to the port in the pod), or a far end that never said a
/// byte; otherwise the direct source's reading, with the server name's origin when the
/// certificate does not list it.
fn explain(
    label: &str,
    pe: &PodEtcd,
    answered: &Answered,
    said: Option<String>,
    err: &etcd_client::Error,
) -> SourceError {
    if let Some(said) = said {
        return SourceError::Etcd {
            endpoint: label.to_string(),
            message: format!(
                "the API server could not connect to port {} in the pod ({})",
                pe.port,
                said.trim().replace('\n', " ")
            ),
            fix: not_listening_fix(pe),
        };
    }
    explain_relayed(
        etcd_grpc::explain(label, pe.tls, &FLAGS, err),
        label,
        "the port-forward",
        answered,
        || not_listening_fix(pe),
        || {
            format!(
                "etcd's server certificate is not issued for {} ({}); give --etcd-server-name with a name the certificate lists (kubeadm's list the node's names and addresses, localhost and 127.0.0.1)",
                pe.server_name, pe.name_from
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn kubeadm_command_gives_the_loopback_port_and_the_advertised_name() {
        let c = words("etcd --advertise-client-urls=https://10.0.0.5:2379 --cert-file=/etc/kubernetes/pki/etcd/server.crt --listen-client-urls=https://127.0.0.1:2379,https://10.0.0.5:2379 --name=cp-1");
        let pe = resolve(&c, None, None).unwrap();
        assert_eq!(
            pe,
            PodEtcd {
                port: 2379,
                tls: true,
                server_name: "10.0.0.5".into(),
                name_from: "the host of the pod's --advertise-client-urls",
            }
        );
    }

    #[test]
    fn a_loopback_or_wildcard_url_wins_over_the_first_one() {
        let c = words("etcd --listen-client-urls https://10.0.0.5:12379,https://0.0.0.0:22379");
        let pe = resolve(&c, None, None).unwrap();
        assert_eq!(pe.port, 22379);
        assert_eq!(pe.server_name, "localhost");
        let c = words("etcd -listen-client-urls=http://10.0.0.5:4001");
        let pe = resolve(&c, None, None).unwrap();
        assert_eq!((pe.port, pe.tls), (4001, false));
        assert_eq!(pe.server_name, "10.0.0.5");
    }

    #[test]
    fn a_script_is_read_word_by_word_and_nothing_means_2379_with_tls() {
        let c = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            "exec etcd --advertise-client-urls=https://[fd00::5]:2379 --listen-client-urls=https://[::]:2379".into(),
        ];
        let pe = resolve(&c, None, None).unwrap();
        assert_eq!((pe.port, pe.server_name.as_str()), (2379, "fd00::5"));
        let pe = resolve(&[], None, None).unwrap();
        assert_eq!((pe.port, pe.tls), (2379, true));
    }

    #[test]
    fn overrides_win_and_a_bad_url_names_the_flag() {
        let c = words("etcd --advertise-client-urls=https://10.0.0.5:2379");
        let pe = resolve(&c, Some(3379), Some("node1")).unwrap();
        assert_eq!((pe.port, pe.server_name.as_str()), (3379, "node1"));
        assert_eq!(pe.name_from, "given with --etcd-server-name");
        let c = words("etcd --listen-client-urls=unix:///run/etcd.sock");
        assert!(resolve(&c, None, None)
            .unwrap_err()
            .contains("--etcd-pod-port"));
    }
}
