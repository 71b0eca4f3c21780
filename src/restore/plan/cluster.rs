//! The plan over several nodes (every member of an HA control plane): each node's own plan,
//! with the shared `--initial-cluster` and one new `--initial-cluster-token` in its
//! `snapshot restore`, put in one order — each kind of step on every node before the next
//! kind (stop all, move aside on all, restore on each, start all, wait on each) — plus a
//! last wait until the members form one cluster with one leader. Ordering only: the steps
//! are [`super::plan`]'s, so one node and several run through the same code. Pure.

use super::super::kit::KitFiles;
use super::{health_command, plan, wait_for, Member, NodeId, NodeLayout, Step, StepKind};
use crate::etcdctl::quote;

/// The `--initial-cluster` of the members restored together: `NAME=URL` for each of each
/// member's peer URLs, in node order.
pub fn shared_initial_cluster(members: &[&Member]) -> String {
    members
        .iter()
        .flat_map(|m| {
            m.initial_advertise_peer_urls
                .split(',')
                .map(|u| u.trim())
                .filter(|u| !u.is_empty())
                .map(move |u| format!("{}={u}", m.name))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The whole plan over `nodes` (node `i` is [`NodeId`] `i`: its layout, the member its
/// etcd.yaml names, and the recovery kit's files there). One node: exactly [`plan`]. Several:
/// the archive is verified once and the kubeconfig fetched from the first node; every other
/// step runs on each node, in the order of [`StepKind::ALL`], and `wait-quorum` follows the
/// last `wait-ready`.
pub fn plan_all(
    nodes: &[(&NodeLayout, &Member, &KitFiles)],
    restore_id: &str,
    kubeconfig_out: &str,
) -> Vec<Step> {
    if let [(l, m, kit)] = nodes {
        return plan(l, m, restore_id, kubeconfig_out, kit, NodeId(0));
    }
    let members: Vec<&Member> = nodes.iter().map(|(_, m, _)| *m).collect();
    let initial_cluster = shared_initial_cluster(&members);
    let mut steps: Vec<Step> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, (l, m, kit))| {
            let m = Member {
                initial_cluster: initial_cluster.clone(),
                initial_cluster_token: Some(restore_id.to_string()),
                ..(*m).clone()
            };
            let aside = super::paths(l, restore_id).pki_aside;
            plan(l, &m, restore_id, kubeconfig_out, kit, NodeId(i))
                .into_iter()
                .filter(move |s| {
                    i == 0 || !matches!(s.kind, StepKind::Verify | StepKind::Kubeconfig)
                })
                .map(move |s| keep_own_certificates(s, &l.pki_dir, &aside))
        })
        .collect();
    let rank = |k: StepKind| StepKind::ALL.iter().position(|a| *a == k);
    // Stable: within a kind, the nodes keep their order.
    steps.sort_by_key(|s| rank(s.kind));
    let at = steps
        .iter()
        .rposition(|s| s.kind == StepKind::WaitReady)
        .expect("every node's plan waits for it")
        + 1;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    steps.insert(at, quorum_step(nodes[0].0, &names));
    steps
}

/// The certificates kubeadm issues for one node, naming its address and hostname: etcd's
/// serving and peer certificates and kube-apiserver's serving certificate (with their keys).
/// The backup holds the node's it was taken from; put on the other nodes, etcd's peer TLS
/// would refuse them and quorum would never form.
pub const NODE_OWN_CERTIFICATES: [&str; 6] = [
    "etcd/server.crt",
    "etcd/server.key",
    "etcd/peer.crt",
    "etcd/peer.key",
    "apiserver.crt",
    "apiserver.key",
];

/// Over several nodes, the `pki` step keeps each node's own [`NODE_OWN_CERTIFICATES`] from
/// its PKI moved aside (the CAs, which sign them, are the backup's and were checked to be the
/// node's). A node that had none gets the backup's.
fn keep_own_certificates(mut s: Step, pki_dir: &str, aside: &str) -> Step {
    if s.kind != StepKind::Pki {
        return s;
    }
    let (pki, aside) = (quote(pki_dir), quote(aside));
    s.script = format!(
        "{} && for f in {}; do if [ -e {aside}/\"$f\" ]; then cp -a {aside}/\"$f\" {pki}/\"$f\"; fi; done",
        s.script,
        NODE_OWN_CERTIFICATES.join(" ")
    );
    s.does = format!(
        "{}, keeping this node's own etcd server/peer and apiserver certificates",
        s.does
    );
    s
}

/// Waits, on the first node, until etcd lists every restored member, all of them answer
/// and agree on one leader, and each is healthy (a linearizable read through the leader).
fn quorum_step(l: &NodeLayout, names: &[&str]) -> Step {
    let ctl = l.etcdctl.invocation();
    let n = names.len();
    let check = format!(
        "s=$({ctl} endpoint status --cluster -w json) && [ \"$(printf '%s' \"$s\" | grep -o '\"member_id\":[0-9]*' | sort -u | wc -l)\" -eq {n} ] && [ \"$(printf '%s' \"$s\" | grep -o '\"leader\":[0-9]*' | sort -u | wc -l)\" -eq 1 ] && ! printf '%s' \"$s\" | grep -q '\"leader\":0[,}}]' && {} --cluster",
        health_command(&l.etcdctl)
    );
    Step {
        kind: StepKind::WaitQuorum,
        node: NodeId(0),
        does: format!(
            "wait up to {}s until the {n} members ({}) are all healthy and agree on one leader (etcdctl endpoint status --cluster)",
            l.wait_seconds,
            names.join(", ")
        ),
        changes_node: false,
        script: wait_for(
            &check,
            &format!("the {n} etcd members are healthy with one leader"),
            l.wait_seconds,
        ),
        undo: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_member;
    use super::*;

    fn member(name: &str, port: u16) -> Member {
        parse_member(&format!(
            "command:\n- etcd\n- --name={name}\n- --initial-cluster={name}=https://10.0.0.1:{port}\n- --initial-advertise-peer-urls=https://10.0.0.1:{port}\n"
        ))
        .unwrap()
    }

    #[test]
    fn one_node_is_the_plan_of_one_node() {
        let (l, m, k) = (NodeLayout::kubeadm(), member("a", 1), KitFiles::default());
        let one = plan_all(&[(&l, &m, &k)], "cpvault-restore-x", "out");
        let plain = plan(&l, &m, "cpvault-restore-x", "out", &k, NodeId(0));
        let kinds = |v: &[Step]| {
            v.iter()
                .map(|s| (s.kind, s.script.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&one), kinds(&plain));
        assert!(!one
            .iter()
            .any(|s| s.script.contains("--initial-cluster-token")));
    }

    #[test]
    fn several_nodes_run_each_step_on_all_before_the_next_with_one_cluster_and_token() {
        let l = NodeLayout::kubeadm();
        let k = KitFiles::default();
        let ms = [member("a", 1), member("b", 2), member("c", 3)];
        let nodes: Vec<_> = ms.iter().map(|m| (&l, m, &k)).collect();
        let steps = plan_all(&nodes, "cpvault-restore-x", "out");
        let order: Vec<(StepKind, usize)> = steps.iter().map(|s| (s.kind, s.node.0)).collect();
        let each = |k: StepKind| [(k, 0), (k, 1), (k, 2)];
        let mut want = vec![(StepKind::Preflight, 0), (StepKind::Preflight, 1)];
        want.extend([(StepKind::Preflight, 2), (StepKind::Verify, 0)]);
        for k in [
            StepKind::Stage,
            StepKind::StopControlPlane,
            StepKind::MoveAside,
            StepKind::RestoreSnapshot,
            StepKind::Pki,
            StepKind::StartControlPlane,
            StepKind::WaitReady,
        ] {
            want.extend(each(k));
        }
        want.extend([(StepKind::WaitQuorum, 0), (StepKind::Kubeconfig, 0)]);
        want.extend(each(StepKind::Cleanup));
        assert_eq!(order, want);
        let cluster = "a=https://10.0.0.1:1,b=https://10.0.0.1:2,c=https://10.0.0.1:3";
        for (i, s) in steps
            .iter()
            .filter(|s| s.kind == StepKind::RestoreSnapshot)
            .enumerate()
        {
            let name = ["a", "b", "c"][i];
            assert!(
                s.script.contains(&format!("--name={name} ")),
                "{}",
                s.script
            );
            assert!(
                s.script.contains(&format!("--initial-cluster={cluster} ")),
                "{}",
                s.script
            );
            assert!(
                s.script.contains(&format!(
                    "--initial-advertise-peer-urls=https://10.0.0.1:{}",
                    i + 1
                )),
                "{}",
                s.script
            );
            assert!(
                s.script
                    .contains("--initial-cluster-token=cpvault-restore-x"),
                "{}",
                s.script
            );
        }
        let quorum = steps
            .iter()
            .find(|s| s.kind == StepKind::WaitQuorum)
            .unwrap();
        assert!(quorum.script.contains("-eq 3 ]"), "{}", quorum.script);
        assert!(quorum.undo.is_empty() && !quorum.changes_node);
    }
}
