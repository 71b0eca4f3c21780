use super::*;

const ID: &str = "cpvault-restore-20260101T000000Z-abcd";

fn statefulset() -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "kube-etcd", "namespace": "user1"},
        "spec": {
            "replicas": 1, "serviceName": "kube-etcd",
            "selector": {"matchLabels": {"app": "kube-etcd"}},
            "template": {"metadata": {"labels": {"app": "kube-etcd"}}, "spec": {
                "securityContext": {"fsGroup": 1001},
                "containers": [{
                    "name": "kube-etcd", "image": "gcr.io/gke-on-prem-release/etcd:v3.4.13-1-gke.4",
                    "command": ["etcd", "--name=kube-etcd-0", "--data-dir=/var/lib/etcd",
                        "--initial-cluster=kube-etcd-0=https://kube-etcd-0.kube-etcd:2380",
                        "--initial-advertise-peer-urls", "https://kube-etcd-0.kube-etcd:2380"],
                    "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"},
                        {"name": "certs", "mountPath": "/etcd.local.config/certificates"}],
                }, {"name": "etcd-defrag", "image": "defrag:1"}],
            }},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
        }
    }))
    .unwrap()
}

#[test]
fn the_statefulset_gives_claim_data_dir_image_and_member_flags() {
    let set = read_statefulset(&statefulset(), "kube-etcd").unwrap();
    assert_eq!(set.claim, "data-kube-etcd-0");
    assert_eq!(
        (set.mount_path.as_str(), set.data_dir.as_str()),
        ("/var/lib/etcd", "/var/lib/etcd")
    );
    assert_eq!(set.pod, "kube-etcd-0");
    assert_eq!(set.replicas, 1);
    assert_eq!(set.member.name, "kube-etcd-0");
    // Both flag spellings: `--flag=value` and `--flag value`.
    assert_eq!(
        set.member.initial_advertise_peer_urls,
        "https://kube-etcd-0.kube-etcd:2380"
    );
    assert!(set.image.contains("etcd:v3.4.13"));
    let e = read_statefulset(&statefulset(), "etcd").unwrap_err();
    assert!(
        e.contains("kube-etcd, etcd-defrag") && e.contains("--etcd-container"),
        "{e}"
    );
}

#[test]
fn the_plan_scales_down_restores_into_a_new_dir_swaps_and_every_change_has_an_undo() {
    let set = read_statefulset(&statefulset(), "kube-etcd").unwrap();
    let l = UserLayout::gke_user("user1");
    let p = plan(&l, &set, &volume_paths(&set, ID), ID);
    let kinds: Vec<StepKind> = p.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, StepKind::USER_CLUSTER);
    for s in &p.steps {
        assert_eq!(StepKind::from_name(s.kind.name()), Some(s.kind));
        let changes = !matches!(
            s.kind,
            StepKind::Preflight
                | StepKind::Verify
                | StepKind::WaitReady
                | StepKind::Cleanup
                | StepKind::RestartApiserver
        );
        assert_eq!(!s.undo.is_empty(), changes, "{s:?}");
    }
    let (scale, undo) = p.actions(StepKind::ScaleDown);
    assert_eq!((scale, undo), (&Action::Scale(0), &Action::Scale(1)));
    // The pod that runs the undos before it comes back with the undo of its removal.
    assert_eq!(p.actions(StepKind::RemoveRestorePod).1, Action::CreatePod);
    let swap = &p
        .steps
        .iter()
        .find(|s| s.kind == StepKind::SwapDataDir)
        .unwrap();
    assert!(
        swap.script
            .contains("/var/lib/etcd/member.before-cpvault-restore-20260101T000000Z-abcd"),
        "{}",
        swap.script
    );
    let restore = &p
        .steps
        .iter()
        .find(|s| s.kind == StepKind::RestoreSnapshot)
        .unwrap();
    for want in [
        "--name=kube-etcd-0",
        "--initial-advertise-peer-urls=https://kube-etcd-0.kube-etcd:2380",
        "stat -c %u:%g",
    ] {
        assert!(restore.script.contains(want), "{want}: {}", restore.script);
    }
    let pod = restore_pod(&l, &set, &volume_paths(&set, ID), "x");
    assert_eq!(
        pod["metadata"]["name"],
        "cpvault-restore-20260101t000000z-abcd"
    );
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-kube-etcd-0"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/lib/etcd"
    );
    assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 1001);
    assert!(pod["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .contains("etcd:v3.4.13"));
}

#[test]
fn the_apiserver_is_restarted_last_unless_no_pod_is_named() {
    let set = read_statefulset(&statefulset(), "kube-etcd").unwrap();
    let mut l = UserLayout::gke_user("user1");
    let p = plan(&l, &set, &volume_paths(&set, ID), ID);
    let last = p.steps.last().unwrap();
    assert_eq!(last.kind, StepKind::RestartApiserver);
    assert!(last.kind.best_effort() && last.kind.fails_the_run());
    assert_eq!(
        last.script,
        "kubectl -n user1 delete pod kube-apiserver-0 --timeout=300s && kubectl -n user1 wait --for=condition=Ready pod/kube-apiserver-0 --timeout=300s"
    );
    assert_eq!(
        p.actions(StepKind::RestartApiserver).0,
        Action::RestartApiserver
    );
    // wait-ready waits for etcd alone: the apiserver is the restart's business.
    let wait = &p.steps[p.steps.len() - 2];
    assert_eq!(wait.kind, StepKind::WaitReady);
    assert!(!wait.script.contains("kube-apiserver-0"), "{}", wait.script);

    l.apiserver_pod = String::new();
    let p = plan(&l, &set, &volume_paths(&set, ID), ID);
    assert_eq!(p.steps.last().unwrap().kind, StepKind::WaitReady);
    assert!(p.steps.iter().all(|s| s.kind != StepKind::RestartApiserver));
}
