//! On an HA control plane (one etcd pod per control-plane node) the snapshot comes from a
//! healthy follower when one answers, keeping the leader's disk and network for the cluster:
//! each pod's etcdctl is asked for its own member's status (`endpoint status` against the
//! pod's local endpoint), and the choice is the gRPC source's (`etcd_grpc::choose`): the
//! first follower by pod name, else the leader. A pod whose etcdctl cannot answer, or whose
//! member is unhealthy (no leader, errors such as a NOSPACE alarm, a learner), is skipped
//! with a warning naming why; when none answers, the first pod is used as before, and the
//! snapshot itself says what is wrong.

use serde::Deserialize;

use super::{Cluster, EtcdPod};
use crate::etcdctl::RemoteEtcdctl;
use crate::sources::etcd_grpc::{choose, Answered};
use crate::text::escape_for_line;

/// `etcdctl endpoint status -w json` for the pod's own member.
fn status_script(e: &RemoteEtcdctl) -> String {
    format!("{} endpoint status -w json", e.invocation())
}

/// The member's and leader's ids from `endpoint status -w json`, as the gRPC source's
/// candidates; why not when the answer is not that, names no leader (a member without
/// quorum), reports errors (an alarm such as NOSPACE), or comes from a learner (which refuses
/// snapshots).
pub(super) fn parse_status(stdout: &str) -> Result<Answered, String> {
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
        #[serde(default)]
        errors: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Endpoint {
        #[serde(rename = "Status")]
        status: Status,
    }
    let unreadable = || "etcdctl's endpoint status was not the JSON expected".to_string();
    let list: Vec<Endpoint> = serde_json::from_str(stdout.trim()).map_err(|_| unreadable())?;
    let s = &list.first().ok_or_else(unreadable)?.status;
    if s.is_learner {
        return Err("its member is a learner, which refuses snapshots".into());
    }
    if s.leader == 0 {
        return Err("its member names no leader".into());
    }
    if !s.errors.is_empty() {
        return Err(format!(
            "its member reports errors: {}",
            s.errors.join("; ")
        ));
    }
    Ok(Answered {
        member_id: s.header.member_id,
        leader: s.leader,
        errors: false,
    })
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
        // Every pod is asked at once; the ones that answered, and what each said, in pod order.
        let outs = futures::future::join_all(pods.iter().map(|pod| self.run(pod, &script))).await;
        let mut which = vec![];
        let mut answers = vec![];
        for (i, (pod, out)) in pods.iter().zip(outs).enumerate() {
            match out.map(|out| parse_status(&out)) {
                Ok(Ok(a)) => {
                    which.push(i);
                    answers.push(a);
                }
                Ok(Err(why)) => warn(pod, &why),
                Err(m) => warn(pod, &m),
            }
        }
        let Some(chosen) = choose(&answers) else {
            if !quiet {
                crate::say!(
                    "note: no etcd pod's member answered as healthy (see the warnings); taking the snapshot from {}/{}",
                    pods[0].namespace,
                    pods[0].name
                );
            }
            return pods.remove(0);
        };
        let (i, is_leader) = (which[chosen], answers[chosen].is_leader());
        if !quiet {
            let leader = answers
                .iter()
                .zip(&which)
                .find(|(a, _)| a.is_leader())
                .map(|(_, j)| pods[*j].name.clone());
            crate::say!(
                "etcd snapshot from pod {}/{} ({}{})",
                pods[i].namespace,
                pods[i].name,
                if is_leader {
                    "the leader: no follower answered"
                } else {
                    "a follower"
                },
                match leader {
                    Some(l) if !is_leader => format!("; the leader is in {l}"),
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
    fn a_status_answer_becomes_a_candidate_unless_it_is_a_learner_leaderless_or_in_error() {
        let out = r#"[{"Endpoint":"https://127.0.0.1:2379","Status":{"header":{"cluster_id":1,"member_id":22,"revision":5,"raft_term":2},"version":"3.5.21","dbSize":20480,"leader":11,"raftIndex":9,"raftTerm":2}}]"#;
        let follower = parse_status(out).unwrap();
        assert_eq!(
            follower,
            Answered {
                member_id: 22,
                leader: 11,
                errors: false
            }
        );
        let learner = out.replace(r#""raftTerm":2}"#, r#""raftTerm":2,"isLearner":true}"#);
        assert_eq!(
            parse_status(&learner).unwrap_err(),
            "its member is a learner, which refuses snapshots"
        );
        let alarmed = out.replace(
            r#""raftTerm":2}"#,
            r#""raftTerm":2,"errors":["memberID:22 alarm:NOSPACE "]}"#,
        );
        assert_eq!(
            parse_status(&alarmed).unwrap_err(),
            "its member reports errors: memberID:22 alarm:NOSPACE "
        );
        assert!(parse_status("Error: context deadline exceeded").is_err());
        assert_eq!(
            parse_status(r#"[{"Status":{"header":{"member_id":3},"leader":0}}]"#).unwrap_err(),
            "its member names no leader",
            "no leader: no quorum"
        );
        // The gRPC source's choice: the follower before the leader.
        let leader = Answered {
            member_id: 11,
            leader: 11,
            errors: false,
        };
        assert_eq!(choose(&[leader, follower]), Some(1));
        assert_eq!(choose(&[leader]), Some(0));
        assert_eq!(choose(&[]), None);
    }
}
