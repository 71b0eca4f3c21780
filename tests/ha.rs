//! HA control planes against a real 3-member etcd on loopback: a backup over gRPC with every
//! member's endpoint, or through the API with one etcd pod per member, records the membership
//! and takes the snapshot from a follower (a member that does not answer is skipped, none
//! answering names them all). The restore side onto a
//! sandbox node (split refused, shrink to one member, the version guard) is in
//! `restore/ha.rs`.

use crate::support::etcd_cluster::EtcdCluster;
use crate::support::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

fn outer(w: &World, reference: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.manifest(reference)).unwrap()).unwrap()
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn a_backup_of_three_members_records_them_and_comes_from_a_follower() {
    let w = World::new();
    let c = EtcdCluster::start(&NAMES);
    c.put("/registry/k", "v");
    // A member that does not answer, first in the list: skipped with a warning.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut endpoints = vec![dead.clone()];
    endpoints.extend(c.endpoints());
    let leader = c.leader().expect("one leader");
    let mut args = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    for e in &endpoints {
        args.extend(["--etcd-endpoint", e.as_str()]);
    }
    let out = w.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: skipping an etcd member") && err.contains(&dead),
        "{err}"
    );
    let reference = stdout(&out).trim().to_string();
    let m = outer(&w, &reference);
    assert_schema_valid(&m);
    let e = &m["etcd"];
    let members = e["members"].as_array().unwrap();
    let mut names: Vec<&str> = members
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, NAMES, "{e:#}");
    for x in members {
        let name = x["name"].as_str().unwrap();
        assert_eq!(x["id"], c.id_of(name).as_str(), "{e:#}");
        let member = c.members.iter().find(|m| m.name == name).unwrap();
        assert_eq!(x["peer_urls"][0], member.peer_url.as_str());
        assert_eq!(x["client_urls"][0], member.client_url.as_str());
    }
    let from = e["from_member"].as_str().unwrap();
    assert_ne!(from, leader, "the snapshot came from the leader: {e:#}");
    assert_eq!(e["member_id"], c.id_of(from).as_str());
    assert!(
        err.contains(&format!("snapshot from member {from} at ")) && err.contains("(follower)"),
        "{err}"
    );
    // `show` lists each member, marking the one the snapshot came from.
    let show = w.run(&["show", &reference]);
    let text = stdout(&show);
    assert!(text.contains("members:   3"), "{text}");
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("* "))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains(&format!("* {from} ")), "{text}");

    // No member answering: one error naming them all, nothing committed.
    let dead2 = format!("http://127.0.0.1:{}", free_port());
    let out = w.run(&[
        "backup",
        "--cluster",
        "other",
        "-r",
        &w.recipient,
        "--etcd-endpoint",
        &dead,
        "--etcd-endpoint",
        &dead2,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = stderr(&out);
    let line = line.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(
        line.contains("no member answered healthy")
            && line.contains(&dead)
            && line.contains(&dead2),
        "{line}"
    );
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn a_backup_through_the_api_with_three_etcd_pods_takes_a_followers_snapshot() {
    let w = World::new();
    let c = EtcdCluster::start(&NAMES);
    c.put("/registry/k", "v");
    let leader = c.leader().expect("one leader");
    let certs = crate::support::tls::EtcdCerts::generate(&w.path("certs"));
    let api = crate::support::kubeapi::KubeApi::start();
    // One static etcd pod per control-plane node, each reaching its own member at the
    // node-local endpoint; the leader's pod sorts first, so taking the first would be wrong.
    let mut pods: Vec<(String, &str)> = c
        .members
        .iter()
        .map(|m| {
            let first = if m.name == leader { "0" } else { "1" };
            (format!("etcd-cp-{first}{}", m.name), m.client_url.as_str())
        })
        .collect();
    pods.sort();
    for (pod, url) in &pods {
        api.add_pod(
            "kube-system",
            pod,
            &[("component", "etcd"), ("tier", "control-plane")],
            &["etcd"],
        );
        api.map_exec_in("kube-system", pod, "https://127.0.0.1:2379", url);
    }
    for (from, to) in [
        ("/etc/kubernetes/pki/etcd/ca.crt", &certs.ca),
        (
            "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
            &certs.client_cert,
        ),
        (
            "/etc/kubernetes/pki/etcd/healthcheck-client.key",
            &certs.client_key,
        ),
    ] {
        api.map_exec(from, to.to_str().unwrap());
    }
    let kubeconfig = w.path("admin.kubeconfig");
    api.write_kubeconfig(&kubeconfig, "admin");
    let out = w.run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--profile",
        "kubeadm",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = outer(&w, stdout(&out).trim())["etcd"].clone();
    let from = e["from_member"].as_str().unwrap();
    assert_ne!(from, leader, "{e:#}");
    let err = stderr(&out);
    let pod_of = |name: &str| {
        pods.iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap()
            .0
            .clone()
    };
    assert!(
        err.contains(&format!(
            "etcd snapshot from pod kube-system/{} (a follower; the leader is in {})",
            pod_of(from),
            pod_of(&leader)
        )),
        "{err}"
    );
    let snapshots: Vec<String> = api
        .execs()
        .into_iter()
        .filter(|x| x.command.join(" ").contains("snapshot save"))
        .map(|x| x.pod)
        .collect();
    assert_eq!(snapshots, [pod_of(from)], "one snapshot, from that pod");
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn to_dir_members_gives_data_dirs_on_which_three_etcds_form_one_cluster_with_the_backup() {
    let w = World::new();
    let c = EtcdCluster::start(&NAMES);
    for i in 0..20 {
        c.put(&format!("/registry/k{i:02}"), &format!("v{i}"));
    }
    let keys_at_backup = EtcdCluster::keys_at(&c.members[0].client_url);
    assert_eq!(keys_at_backup.len(), 20);
    let reference = w.backup(&["--etcd-endpoint", &c.endpoints().join(",")]);
    c.put("/registry/late", "after the backup");
    drop(c);

    let to = w.path("restored");
    let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let spec: Vec<String> = NAMES
        .iter()
        .zip(&ports)
        .map(|(n, p)| format!("{n}=http://127.0.0.1:{p}"))
        .collect();
    let out = w.run(&[
        "restore",
        &reference,
        "--allow-unsigned",
        "-i",
        w.key.to_str().unwrap(),
        "--to-dir",
        to.to_str().unwrap(),
        "--members",
        &spec.join(","),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // One data dir per member on stdout, and how to start each on stderr.
    let dirs: Vec<String> = NAMES
        .iter()
        .map(|n| to.join(n).display().to_string())
        .collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), dirs);
    let err = stderr(&out);
    for (n, s) in NAMES.iter().zip(&spec) {
        let peer = s.split_once('=').unwrap().1;
        assert!(
            err.contains(&format!(
                "etcd --name {n} --data-dir {}",
                to.join(n).display()
            )) && err.contains(&format!("--initial-advertise-peer-urls {peer}")),
            "{err}"
        );
    }
    assert!(err.contains("--initial-cluster-token cpvault-"), "{err}");

    let members: Vec<(String, std::path::PathBuf, u16)> = NAMES
        .iter()
        .zip(&ports)
        .map(|(n, p)| (n.to_string(), to.join(n), *p))
        .collect();
    let restored = EtcdCluster::start_on(&members, None);
    let list = restored.member_list();
    let got: Vec<(&str, &str)> = list
        .iter()
        .map(|(_, n, urls)| (n.as_str(), urls[0].as_str()))
        .collect();
    let want: Vec<(&str, &str)> = spec.iter().map(|s| s.split_once('=').unwrap()).collect();
    assert_eq!(got, want, "the restored cluster's members");
    assert!(restored.leader().is_some(), "no single leader");
    for m in &restored.members {
        assert_eq!(
            EtcdCluster::keys_at(&m.client_url),
            keys_at_backup,
            "member {} serves other keys",
            m.name
        );
    }
    // Without --members: a single data dir, as before.
    let one = w.path("one");
    let out = w.run(&[
        "restore",
        &reference,
        "--allow-unsigned",
        "-i",
        w.key.to_str().unwrap(),
        "--to-dir",
        one.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(one.join("etcd/member").is_dir());
    // --members goes with --to-dir only.
    let out = w.run(&["restore", &reference, "--members", &spec.join(",")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
