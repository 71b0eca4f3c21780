//! On an HA control plane (one etcd pod per control-plane node) the snapshot comes from a
//! healthy follower when one answers, keeping the leader's disk and network for the cluster:
//! each pod's etcdctl is asked for its own member's status (`endpoint status` against the
//! pod's local endpoint), and the first follower by pod name is taken, else the leader. A pod
//! whose etcdctl cannot answer (an unhealthy member, or an image without a shell) is skipped
//! with a warning; when none answers, the first pod is used as before, and the snapshot itself
//! says what is wrong.

use serde::Deserialize;

use super::{Cluster, EtcdPod};
use crate::etcdctl::RemoteEtcdctl;
use crate::text::escape_for_line;

/// What a member said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Role {
    member: u64,
    leader: u64,
}

impl Role {
    fn is_leader(self) -> bool {
        self.member == self.leader
    }
}

/// `etcdctl endpoint status -w json` for the pod's own member.
fn status_script(e: &RemoteEtcdctl) -> String {
    format!("{} endpoint status -w json", e.invocation())
}

/// The member and leader ids from `endpoint status -w json`; why not when the answer is not
/// that, names no leader (a member without quorum), or comes from a learner (which refuses
/// snapshots).
pub(super) fn parse_role(stdout: &str) -> Result<Role, &'static str> {
    #[derive(Deserialize)]
    struct Header {
        member_id: u64,
    }
    #[derive(Deserialize)]
    struct Status {
        header: Header,
        leader: u64,
        #[serde(default, rename = "isLearner")]
        is_learner: bool,
    }
    #[derive(Deserialize)]
    struct Endpoint {
        #[serde(rename = "Status")]
        status: Status,
    }
    let unreadable = "etcdctl's endpoint status was not the JSON expected";
    let list: Vec<Endpoint> = serde_json::from_str(stdout.trim()).map_err(|_| unreadable)?;
    let s = &list.first().ok_or(unreadable)?.status;
    if s.is_learner {
        return Err("its member is a learner, which refuses snapshots");
    }
    if s.leader == 0 {
        return Err("its member names no leader");
    }
    Ok(Role {
        member: s.header.member_id,
        leader: s.leader,
    })
}

/// Of the pods that answered, the first follower, else the first leader.
fn choose(answers: &[(usize, Role)]) -> Option<(usize, Role)> {
    answers
        .iter()
        .find(|(_, r)| !r.is_leader())
        .or_else(|| answers.first())
        .copied()
}

impl Cluster {
    /// The pod to take the snapshot from; see the module docs. Says which on stderr when
    /// there was a choice (unless `quiet`).
    pub async fn choose_member(
        &self,
        mut pods: Vec<EtcdPod>,
        e: &RemoteEtcdctl,
        quiet: bool,
    ) -> EtcdPod {
        if pods.len() < 2 {
            return pods.remove(0);
        }
        let script = status_script(e);
        let mut answers = vec![];
        for (i, pod) in pods.iter().enumerate() {
            match self.run(pod, &script).await {
                Ok(out) => match parse_role(&out) {
                    Ok(r) => answers.push((i, r)),
                    Err(why) => warn(pod, why),
                },
                Err(m) => warn(pod, &m),
            }
        }
        let Some((i, role)) = choose(&answers) else {
            if !quiet {
                crate::say!(
                    "note: no etcd pod told its member's role; taking the snapshot from {}/{}",
                    pods[0].namespace,
                    pods[0].name
                );
            }
            return pods.remove(0);
        };
        if !quiet {
            let leader = answers
                .iter()
                .find(|(_, r)| r.is_leader())
                .map(|(j, _)| pods[*j].name.clone());
            crate::say!(
                "etcd snapshot from pod {}/{} ({}{})",
                pods[i].namespace,
                pods[i].name,
                if role.is_leader() {
                    "the leader: no follower answered"
                } else {
                    "a follower"
                },
                match leader {
                    Some(l) if !role.is_leader() => format!("; the leader is in {l}"),
                    _ => String::new(),
                }
            );
        }
        pods.swap_remove(i)
    }
}

fn warn(pod: &EtcdPod, why: &str) {
    crate::say!(
        "warning: etcd pod {}/{} skipped: {}",
        pod.namespace,
        pod.name,
        escape_for_line(why, 300)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_preferred_and_the_leader_taken_only_when_no_follower_answered() {
        let out = r#"[{"Endpoint":"https://127.0.0.1:2379","Status":{"header":{"cluster_id":1,"member_id":22,"revision":5,"raft_term":2},"version":"3.5.21","dbSize":20480,"leader":11,"raftIndex":9,"raftTerm":2}}]"#;
        let follower = parse_role(out).unwrap();
        let learner = out.replace(r#""raftTerm":2}"#, r#""raftTerm":2,"isLearner":true}"#);
        assert_eq!(
            parse_role(&learner),
            Err("its member is a learner, which refuses snapshots")
        );
        assert_eq!(
            follower,
            Role {
                member: 22,
                leader: 11
            }
        );
        assert!(!follower.is_leader());
        let leader = Role {
            member: 11,
            leader: 11,
        };
        assert_eq!(choose(&[(0, leader), (2, follower)]), Some((2, follower)));
        assert_eq!(choose(&[(1, leader)]), Some((1, leader)));
        assert_eq!(choose(&[]), None);
        assert!(parse_role("Error: context deadline exceeded").is_err());
        assert_eq!(
            parse_role(r#"[{"Status":{"header":{"member_id":3},"leader":0}}]"#),
            Err("its member names no leader"),
            "no leader: no quorum"
        );
    }
}
