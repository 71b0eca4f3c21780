//! How `etcdctl` is invoked on another machine (a node over SSH, a pod through a Kubernetes
//! exec): the command, the endpoint and the client certificates there, the POSIX shell
//! quoting every remote script relies on, and the reading of etcd's own flags from its
//! static-pod manifest. Shared by the backup sources and by restore, so it sits below both;
//! it only builds and reads strings and must never run anything itself.

/// How etcdctl is run on the remote side, and which certificates it uses there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RemoteEtcdctl {
    /// The command that runs etcdctl, e.g. `etcdctl` or `/usr/local/bin/etcdctl`; words are
    /// split by the remote shell, so an `env X=Y etcdctl` prefix works.
    pub command: String,
    /// etcd's client URL as seen from there.
    pub endpoint: String,
    /// CA certificate path there.
    pub cacert: Option<String>,
    /// Client certificate path there.
    pub cert: Option<String>,
    /// Client key path there.
    pub key: Option<String>,
}

impl RemoteEtcdctl {
    /// kubeadm's layout (also GKE on VMware admin clusters'): etcd on 127.0.0.1:2379 with the
    /// healthcheck client certificate under `/etc/kubernetes/pki/etcd`.
    pub fn kubeadm() -> RemoteEtcdctl {
        RemoteEtcdctl {
            command: "etcdctl".into(),
            endpoint: "https://127.0.0.1:2379".into(),
            cacert: Some("/etc/kubernetes/pki/etcd/ca.crt".into()),
            cert: Some("/etc/kubernetes/pki/etcd/healthcheck-client.crt".into()),
            key: Some("/etc/kubernetes/pki/etcd/healthcheck-client.key".into()),
        }
    }

    /// The settings' overrides on top of these defaults: a set value replaces the default,
    /// and an empty certificate path drops that flag (a plain-http etcd needs none).
    pub fn with_overrides(
        self,
        command: Option<&String>,
        endpoint: Option<&String>,
        cacert: Option<&String>,
        cert: Option<&String>,
        key: Option<&String>,
    ) -> RemoteEtcdctl {
        let path = |v: Option<&String>, default: Option<String>| match v {
            Some(p) => (!p.is_empty()).then(|| p.clone()),
            None => default,
        };
        RemoteEtcdctl {
            command: command.cloned().unwrap_or(self.command),
            endpoint: endpoint.cloned().unwrap_or(self.endpoint),
            cacert: path(cacert, self.cacert),
            cert: path(cert, self.cert),
            key: path(key, self.key),
        }
    }

    /// `<command> --endpoints=… [--cacert=… --cert=… --key=…]` as words, for an exec with no
    /// shell (the command split on whitespace; the v3 API is etcdctl's default since 3.4); a
    /// subcommand follows.
    pub fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = self.command.split_whitespace().map(String::from).collect();
        argv.push(format!("--endpoints={}", self.endpoint));
        argv.extend(self.cert_flags().map(|(flag, v)| format!("--{flag}={v}")));
        argv
    }

    fn cert_flags(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [
            ("cacert", &self.cacert),
            ("cert", &self.cert),
            ("key", &self.key),
        ]
        .into_iter()
        .filter_map(|(flag, v)| Some((flag, v.as_ref()?)))
    }

    /// `ETCDCTL_API=3 <command> --endpoints=… [--cacert=… --cert=… --key=…]`, quoted for a
    /// POSIX shell; a subcommand follows.
    pub fn invocation(&self) -> String {
        let mut ctl = format!(
            "ETCDCTL_API=3 {} --endpoints={}",
            self.command,
            quote(&self.endpoint)
        );
        for (flag, v) in self.cert_flags() {
            ctl.push_str(&format!(" --{flag}={}", quote(v)));
        }
        ctl
    }
}

/// The value of `--NAME` (or `-NAME`, etcd takes both) in a command line, as `--NAME=V` or
/// `--NAME V`; `None` when it is absent. One reader for every etcd command line cpvault reads
/// (a pod's command and args, the words of a `sh -c` script).
pub fn command_flag(words: &[String], name: &str) -> Option<String> {
    let (long, short) = (format!("--{name}"), format!("-{name}"));
    let mut it = words.iter();
    while let Some(w) = it.next() {
        for prefix in [&long, &short] {
            if let Some(rest) = w.strip_prefix(prefix.as_str()) {
                if let Some(v) = rest.strip_prefix('=') {
                    return Some(v.to_string());
                }
                if rest.is_empty() {
                    return it.next().cloned();
                }
            }
        }
    }
    None
}

/// The value of `--NAME=VALUE` in a static-pod manifest's command list (`- --name=node1`,
/// quoted or not), as kubeadm writes etcd.yaml; `None` when the flag is absent. One reader
/// for backup and restore, so both understand the same manifests: the list's items are read
/// as words by [`command_flag`].
pub fn static_pod_flag(manifest: &str, name: &str) -> Option<String> {
    let items = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::trim));
    command_flag(&command_words(items), name)
}

/// The words of a command line as [`command_flag`] reads them, each stripped of the quotes a
/// manifest may put around it.
pub fn command_words<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    words
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string())
        .collect()
}

/// Quotes one word for a POSIX shell.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r#"'\''"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_guards_the_rest() {
        assert_eq!(quote("/etc/kubernetes/pki"), "/etc/kubernetes/pki");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r#"'it'\''s'"#);
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn argv_is_the_invocation_as_words_and_flags_read_either_way() {
        let mut e = RemoteEtcdctl::kubeadm();
        e.command = "env X=1 etcdctl".into();
        e.cert = None;
        assert_eq!(
            e.argv(),
            [
                "env",
                "X=1",
                "etcdctl",
                "--endpoints=https://127.0.0.1:2379",
                "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
                "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key",
            ]
        );
        let words: Vec<String> = ["etcd", "--names=x", "--name=a", "-data-dir", "/d"]
            .map(String::from)
            .to_vec();
        assert_eq!(command_flag(&words, "name").as_deref(), Some("a"));
        assert_eq!(command_flag(&words, "data-dir").as_deref(), Some("/d"));
        assert_eq!(command_flag(&words, "names").as_deref(), Some("x"));
        assert_eq!(command_flag(&words, "initial-cluster"), None);
    }

    #[test]
    fn invocation_quotes_and_drops_absent_certificates() {
        let mut e = RemoteEtcdctl::kubeadm();
        assert!(e
            .invocation()
            .ends_with("--key=/etc/kubernetes/pki/etcd/healthcheck-client.key"));
        e.endpoint = "https://a b".into();
        e.cacert = None;
        let i = e.invocation();
        assert!(
            i.contains("--endpoints='https://a b'") && !i.contains("--cacert"),
            "{i}"
        );
    }
}
