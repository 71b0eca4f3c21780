//! The nodes `restore` works on: their destinations (every `--ssh`, with an optional
//! `:PORT` each, or every control-plane node found through the cluster's API), the layout of each (the
//! node layout flags, given once for all nodes or once per node, paired by position), and
//! their connections. Gathering only; what is done on them is the core's.

use crate::cli::RestoreArgs;
use crate::error::Usage;
use crate::restore::plan::NodeLayout;
use crate::sources::gather;
use crate::sources::kube::{Cluster, KubeTarget, Profile};
use crate::sources::settings::Sources;
use crate::sources::ssh::{Node, SshTarget};

use super::Ctx;

/// The nodes' destinations as given: every `--ssh`, else the config file's `ssh`; empty when
/// the node is to be found through the cluster.
pub(super) fn destinations(args: &RestoreArgs, settings: &Sources) -> Vec<String> {
    if args.nodes.is_empty() {
        settings.ssh.iter().cloned().collect()
    } else {
        args.nodes.clone()
    }
}

/// `USER@HOST:PORT` split into `USER@HOST` and the port; `[V6]:PORT` too. A destination
/// without a port (or an IPv6 address without brackets) is returned whole.
pub(super) fn split_port(dest: &str) -> (String, Option<u16>) {
    let (user, host) = match dest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), dest),
    };
    let split = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once("]:")
    } else {
        host.split_once(':').filter(|(h, _)| !h.contains(':'))
    };
    match split.and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?))) {
        Some((h, port)) => (format!("{user}{h}"), Some(port)),
        None => (dest.to_string(), None),
    }
}

/// How many nodes the flags speak of: one per `--ssh`, or without any (nodes found through
/// the cluster, not counted yet) as many as the layout flag given most often.
pub(super) fn count(args: &RestoreArgs) -> usize {
    if !args.nodes.is_empty() {
        return args.nodes.len();
    }
    [
        &args.manifests_dir,
        &args.etcd_data_dir,
        &args.pki_dir,
        &args.admin_conf,
        &args.staging_dir,
        &args.stopped_check,
        &args.ready_check,
    ]
    .iter()
    .map(|v| v.len())
    .max()
    .unwrap_or(1)
    .max(1)
}

/// Node `i`'s value of a layout flag given once (every node) or once per node.
fn pick<'a>(flag: &str, values: &'a [String], i: usize, n: usize) -> Result<&'a str, Usage> {
    match values.len() {
        1 => Ok(&values[0]),
        len if len == n => Ok(&values[i]),
        len => Err(Usage(format!(
            "--{flag} is given {len} times for {n} nodes: give it once (every node) or once per --ssh, in the same order"
        ))),
    }
}

/// The layout of each of `n` nodes, from the flags.
///
/// # Errors
/// A layout flag given neither once nor once per node; `--shrink-to-one-member` with
/// several nodes.
pub(super) fn layouts(args: &RestoreArgs, n: usize) -> Result<Vec<NodeLayout>, Usage> {
    if n > 1 && args.shrink_to_one_member {
        return Err(Usage(
            "--shrink-to-one-member makes one node a cluster of one: give one --ssh with it, or drop it to restore every member's node together".into(),
        ));
    }
    (0..n.max(1))
        .map(|i| {
            let n = n.max(1);
            let mut l = NodeLayout::kubeadm();
            let e = &args.node;
            l.etcdctl = l.etcdctl.with_overrides(
                e.node_etcdctl.as_ref(),
                e.node_etcd_endpoint.as_ref(),
                e.node_etcd_cacert.as_ref(),
                e.node_etcd_cert.as_ref(),
                e.node_etcd_key.as_ref(),
            );
            l.manifests_dir = pick("manifests-dir", &args.manifests_dir, i, n)?.into();
            l.data_dir = pick("etcd-data-dir", &args.etcd_data_dir, i, n)?.into();
            l.pki_dir = pick("node-pki-dir", &args.pki_dir, i, n)?.into();
            l.admin_conf = pick("admin-conf", &args.admin_conf, i, n)?.into();
            l.staging_parent = pick("staging-dir", &args.staging_dir, i, n)?.into();
            l.wait_seconds = args.wait_timeout;
            l.skip_hash_check = args.skip_hash_check;
            l.shrink_to_one_member = args.shrink_to_one_member;
            if !args.stopped_check.is_empty() {
                l.stopped_check = pick("stopped-check", &args.stopped_check, i, n)?.into();
            }
            if !args.ready_check.is_empty() {
                l.ready_check = Some(pick("ready-check", &args.ready_check, i, n)?.into());
            }
            Ok(l)
        })
        .collect()
}

/// Connects to every node `dests` names (closing those already open if one fails), or with
/// none, to every control-plane node found through the cluster's API (its key from the
/// cluster's secret, offered from memory through a private ssh-agent for the login only).
pub(super) async fn connect_all(
    ctx: &Ctx,
    settings: &Sources,
    dests: &[String],
) -> anyhow::Result<Vec<Node>> {
    let targets = if dests.is_empty() {
        discover(ctx, settings).await?
    } else {
        dests
            .iter()
            .map(|dest| {
                let (dest, port) = split_port(dest);
                let mut t = gather::ssh_target(settings, &dest);
                t.port = port.or(settings.ssh_port);
                t
            })
            .collect()
    };
    let mut nodes = vec![];
    for t in &targets {
        match Node::connect(t).await {
            Ok(n) => nodes.push(n),
            Err(e) => {
                for n in nodes {
                    n.close().await;
                }
                return Err(e.into());
            }
        }
    }
    Ok(nodes)
}

/// The control-plane nodes, by name, found through the cluster's API.
async fn discover(ctx: &Ctx, settings: &Sources) -> anyhow::Result<Vec<SshTarget>> {
    let Some(kubeconfig) = &settings.kubeconfig else {
        return Err(Usage(
            "no node to reach: pass --ssh USER@HOST (one per etcd member), or --kubeconfig to find the control-plane nodes through the cluster's API".into(),
        )
        .into());
    };
    let cluster = Cluster::connect(&KubeTarget {
        kubeconfig: kubeconfig.clone(),
        context: settings.context.clone(),
        profile: settings.profile.unwrap_or(Profile::GkeAdmin),
        namespace: None,
    })
    .await?;
    let found = gather::discover_nodes(&cluster, settings).await?;
    if !ctx.quiet {
        for f in &found {
            crate::say!(
                "control-plane node {} at {} (found through the cluster's API)",
                f.name,
                f.address
            );
        }
    }
    Ok(found.into_iter().map(|f| f.target).collect())
}

/// The nodes connected and their layouts: flags that do not pair with the nodes given are
/// refused before any connection; nodes found through the cluster are counted once found
/// (and closed again when their flags do not pair).
pub(super) async fn connect_with_layouts(
    ctx: &Ctx,
    args: &RestoreArgs,
    settings: &Sources,
    dests: &[String],
) -> anyhow::Result<(Vec<Node>, Vec<NodeLayout>)> {
    if !dests.is_empty() {
        layouts(args, dests.len())?;
    }
    let nodes = connect_all(ctx, settings, dests).await?;
    match layouts(args, nodes.len()) {
        Ok(l) => Ok((nodes, l)),
        Err(e) => {
            for node in nodes {
                node.close().await;
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_after_the_host_is_split_off() {
        let s = |d: &str| split_port(d);
        assert_eq!(
            s("root@10.0.0.1:2222"),
            ("root@10.0.0.1".into(), Some(2222))
        );
        assert_eq!(s("root@cp-1"), ("root@cp-1".into(), None));
        assert_eq!(s("cp-1:22"), ("cp-1".into(), Some(22)));
        assert_eq!(
            s("root@[fe80::1]:2222"),
            ("root@fe80::1".into(), Some(2222))
        );
        assert_eq!(s("root@fe80::1"), ("root@fe80::1".into(), None));
        assert_eq!(s("root@host:x"), ("root@host:x".into(), None));
    }

    #[test]
    fn layout_flags_go_to_every_node_or_pair_by_position() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            r: RestoreArgs,
        }
        let parse = |extra: &[&str]| {
            let mut a = vec!["x", "c/latest", "--ssh", "a", "--ssh", "b"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a).unwrap().r
        };
        let r = parse(&[
            "--etcd-data-dir",
            "/d",
            "--ready-check",
            "r1",
            "--ready-check",
            "r2",
        ]);
        let l = layouts(&r, 2).unwrap();
        assert_eq!(
            (l[0].data_dir.as_str(), l[1].data_dir.as_str()),
            ("/d", "/d")
        );
        assert_eq!(l[1].ready_check.as_deref(), Some("r2"));
        assert_eq!(l[0].manifests_dir, "/etc/kubernetes/manifests");
        let r = parse(&[
            "--staging-dir",
            "/1",
            "--staging-dir",
            "/2",
            "--staging-dir",
            "/3",
        ]);
        let e = layouts(&r, 2).unwrap_err();
        assert!(
            e.0.contains("--staging-dir is given 3 times for 2 nodes"),
            "{}",
            e.0
        );
        let r = parse(&["--shrink-to-one-member"]);
        assert!(layouts(&r, 2).is_err());
    }
}
