//! The user-cluster restore plan (design.md §10): what the etcd StatefulSet says (image,
//! claim, data dir, member flags), and the named steps that restore it through the admin
//! cluster's API, each with the action the executor takes and its undo. Pure: computed from
//! the StatefulSet and a restore id, so `--dry-run` prints exactly what would happen (as the
//! `kubectl` commands an operator would type, which is also what a stopped rollback leaves
//! them to run) and tests check it without a cluster. Nothing on the volume is deleted that
//! was there before: the old `member/` is kept under a name with the restore id.

use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{json, Value};

use crate::etcdctl::{quote, RemoteEtcdctl};
use crate::restore::plan::{snapshot_restore_command, Member, NodeId, Step, StepKind};

/// What the restore is pointed at and how it waits; every name a flag, the defaults GKE on
/// VMware's.
#[derive(Debug, Clone)]
pub struct UserLayout {
    /// The user cluster's namespace in the admin cluster.
    pub namespace: String,
    /// The etcd StatefulSet.
    pub statefulset: String,
    /// Its etcd container.
    pub container: String,
    /// The user cluster's kube-apiserver pod in the same namespace, restarted at the end
    /// (empty: left alone).
    pub apiserver_pod: String,
    /// The restore pod's image (`None`: the etcd container's).
    pub restore_image: Option<String>,
    /// How etcdctl inside the etcd pod checks its health (`endpoint health`, run without a
    /// shell).
    pub etcdctl: RemoteEtcdctl,
    /// Seconds to wait for pods to go, to run, and to be ready.
    pub wait_seconds: u64,
    /// `snapshot restore --skip-hash-check`.
    pub skip_hash_check: bool,
}

impl UserLayout {
    /// `statefulset NS/NAME`, for messages.
    pub fn destination(&self) -> String {
        format!("statefulset {}/{}", self.namespace, self.statefulset)
    }

    /// GKE on VMware's names in `namespace`.
    pub fn gke_user(namespace: &str) -> UserLayout {
        UserLayout {
            namespace: namespace.into(),
            statefulset: "kube-etcd".into(),
            container: "kube-etcd".into(),
            apiserver_pod: "kube-apiserver-0".into(),
            restore_image: None,
            etcdctl: crate::sources::kube::Profile::GkeUser.etcdctl(),
            wait_seconds: 300,
            skip_hash_check: false,
        }
    }
}

/// What the StatefulSet says about its etcd, read in preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSet {
    /// `spec.replicas` now: what scale-up goes back to.
    pub replicas: i32,
    /// The etcd pod (`<statefulset>-0`).
    pub pod: String,
    /// The volume claim template holding the data dir.
    pub volume: String,
    /// The pod's claim (`<template>-<pod>`).
    pub claim: String,
    /// Where the etcd container mounts it.
    pub mount_path: String,
    /// etcd's `--data-dir`, inside that mount.
    pub data_dir: String,
    /// The etcd container's image.
    pub image: String,
    /// The member flags of the etcd container's command.
    pub member: Member,
    /// The pod template's `securityContext`, `tolerations`, `nodeSelector` and
    /// `imagePullSecrets`, which the restore pod takes over.
    pub pod_settings: Vec<(String, String)>,
}

/// Reads what the restore needs from the StatefulSet.
///
/// # Errors
/// A one-line description of what the StatefulSet lacks.
pub fn read_statefulset(sts: &StatefulSet, container: &str) -> Result<EtcdSet, String> {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let spec = sts
        .spec
        .as_ref()
        .ok_or_else(|| format!("statefulset {name} has no spec"))?;
    let pod_spec = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| format!("statefulset {name} has no pod template spec"))?;
    let names: Vec<&str> = pod_spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let c = pod_spec
        .containers
        .iter()
        .find(|c| c.name == container)
        .ok_or_else(|| {
            format!(
                "statefulset {name} has no container {container} (it has: {}); pass --etcd-container",
                names.join(", ")
            )
        })?;
    let mut argv = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    let flag = |f: &str| crate::etcdctl::command_flag(&argv, f);
    let need = |f: &str| {
        flag(f).ok_or_else(|| {
            format!("the {container} container of statefulset {name} has no --{f} in its command")
        })
    };
    if let Some(wal) = flag("wal-dir") {
        return Err(crate::restore::plan::wal_dir_unsupported(
            &format!("the {container} container of statefulset {name}"),
            &wal,
        ));
    }
    let member = Member {
        name: need("name")?,
        initial_cluster: need("initial-cluster")?,
        initial_advertise_peer_urls: need("initial-advertise-peer-urls")?,
        data_dir: flag("data-dir"),
        // One member: the restored cluster keeps etcdctl's default token, as a node restore.
        initial_cluster_token: None,
    };
    let data_dir = member.data_dir.clone().ok_or_else(|| {
        format!("the {container} container of statefulset {name} has no --data-dir in its command, so where etcd keeps its data on the volume is unknown")
    })?;
    let data_dir = data_dir.trim_end_matches('/').to_string();
    let templates: Vec<String> = (spec.volume_claim_templates.iter().flatten())
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    // The claim template mounted where the data dir is (the longest mount that holds it).
    let mount = (c.volume_mounts.iter().flatten())
        .filter(|m| templates.contains(&m.name))
        .filter(|m| {
            let p = m.mount_path.trim_end_matches('/');
            data_dir == p || data_dir.starts_with(&format!("{p}/"))
        })
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(|| {
            format!(
                "no volume claim template of statefulset {name} ({}) is mounted in its {container} container where --data-dir={data_dir} lies",
                if templates.is_empty() { "it has none".to_string() } else { templates.join(", ") }
            )
        })?;
    let image = c
        .image
        .clone()
        .ok_or_else(|| format!("the {container} container of statefulset {name} has no image"))?;
    let pod = format!("{name}-0");
    let template = serde_json::to_value(pod_spec).unwrap_or(Value::Null);
    let pod_settings = [
        "securityContext",
        "tolerations",
        "nodeSelector",
        "imagePullSecrets",
    ]
    .into_iter()
    .filter(|k| !template[*k].is_null())
    .map(|k| (k.to_string(), template[k].to_string()))
    .collect();
    Ok(EtcdSet {
        replicas: spec.replicas.unwrap_or(1),
        claim: format!("{}-{pod}", mount.name),
        volume: mount.name.clone(),
        mount_path: mount.mount_path.trim_end_matches('/').to_string(),
        pod,
        data_dir,
        image,
        member,
        pod_settings,
    })
}

/// Where things are on the volume, as every pod mounting it sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePaths {
    /// The restore pod's name.
    pub restore_pod: String,
    /// 0700 dir the verified snapshot is streamed into.
    pub staging: String,
    /// The staged snapshot.
    pub snapshot: String,
    /// Where `snapshot restore` writes before the swap.
    pub data_new: String,
    /// The old `member/`, kept.
    pub data_aside: String,
}

/// The paths of `restore_id` on the volume of `set`.
pub fn volume_paths(set: &EtcdSet, restore_id: &str) -> VolumePaths {
    let d = &set.data_dir;
    let staging = format!("{d}/.{restore_id}.stage");
    VolumePaths {
        // A pod name is a DNS label: lower case.
        restore_pod: restore_id.to_ascii_lowercase(),
        snapshot: format!("{staging}/snapshot.db"),
        staging,
        data_new: format!("{d}/.{restore_id}"),
        data_aside: format!("{d}/member.before-{restore_id}"),
    }
}

/// Makes the 0700 staging dir and writes stdin into the snapshot file there.
pub fn stage_script(p: &VolumePaths) -> String {
    format!(
        "umask 077 && mkdir -m 0700 {} && exec cat > {}",
        quote(&p.staging),
        quote(&p.snapshot)
    )
}

/// What the executor does for a step (or its undo) through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing (checks done before the runner starts).
    Nothing,
    /// Set the StatefulSet's replicas; with 0, wait until its pod is gone.
    Scale(i32),
    /// Create the restore pod and wait until it runs.
    CreatePod,
    /// Delete the restore pod and wait until it is gone.
    DeletePod,
    /// Stream the verified snapshot into the restore pod over exec stdin, then check its
    /// sha256 there.
    Stage,
    /// Run this shell script in the restore pod.
    Shell(String),
    /// Wait for the etcd pod's readiness and health.
    WaitReady,
    /// Delete the apiserver pod and wait until a new one of that name (another uid) is Ready.
    RestartApiserver,
}

/// A plan: the steps the runner takes, and what each step and its undo do.
#[derive(Debug, Clone)]
pub struct UserPlan {
    /// The steps in order.
    pub steps: Vec<Step>,
    /// Per step (same index): its action and its undo's.
    pub actions: Vec<(Action, Action)>,
}

impl UserPlan {
    /// The actions of `step`'s kind.
    pub fn actions(&self, kind: StepKind) -> &(Action, Action) {
        let i = self.steps.iter().position(|s| s.kind == kind);
        &self.actions[i.expect("a step of this plan")]
    }
}

/// The restore pod: the etcd image (or `--restore-pod-image`) idling under a shell, the same
/// claim at the same mount path, so every path on the volume reads as etcd sees it.
pub fn restore_pod(l: &UserLayout, set: &EtcdSet, p: &VolumePaths, restore_id: &str) -> Value {
    let image = l.restore_image.clone().unwrap_or_else(|| set.image.clone());
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": "restore",
            "image": image,
            "command": ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"],
            "volumeMounts": [{"name": set.volume, "mountPath": set.mount_path}],
        }],
        "volumes": [{"name": set.volume, "persistentVolumeClaim": {"claimName": set.claim}}],
    });
    for (k, v) in &set.pod_settings {
        spec[k] = serde_json::from_str(v).unwrap_or(Value::Null);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": p.restore_pod, "namespace": l.namespace,
            "labels": {"app.kubernetes.io/managed-by": "cpvault", "cpvault.io/restore-id": restore_id}},
        "spec": spec,
    })
}

fn step(kind: StepKind, does: String, script: String, undo: String) -> Step {
    Step {
        kind,
        node: NodeId(0),
        does,
        changes_node: !kind.checked_before_changes() && kind != StepKind::WaitReady,
        script,
        undo,
    }
}

/// What restarts the apiserver pod by hand: delete it, then wait for its controller's new one.
fn restart_apiserver_command(l: &UserLayout) -> String {
    let (ns, pod, t) = (quote(&l.namespace), quote(&l.apiserver_pod), l.wait_seconds);
    format!(
        "kubectl -n {ns} delete pod {pod} --timeout={t}s && kubectl -n {ns} wait --for=condition=Ready pod/{pod} --timeout={t}s"
    )
}

/// The whole plan, in order, over the volume's paths `p` of `restore_id`.
pub fn plan(l: &UserLayout, set: &EtcdSet, p: &VolumePaths, restore_id: &str) -> UserPlan {
    let q = |s: &str| quote(s);
    let ns = q(&l.namespace);
    let sts = q(&l.statefulset);
    let t = l.wait_seconds;
    let kubectl = format!("kubectl -n {ns}");
    let scale = |n: i32| format!("{kubectl} scale statefulset {sts} --replicas={n}");
    let gone = |pod: &str| format!("{kubectl} wait --for=delete pod/{} --timeout={t}s", q(pod));
    let in_pod = |script: &str| {
        format!(
            "{kubectl} exec {} -- sh -c {}",
            q(&p.restore_pod),
            q(script)
        )
    };
    let pod_json = restore_pod(l, set, p, restore_id).to_string();
    let create = format!(
        "echo {} | {kubectl} create -f - && {kubectl} wait --for=condition=Ready pod/{} --timeout={t}s",
        q(&pod_json),
        q(&p.restore_pod)
    );
    let delete = format!(
        "{kubectl} delete pod {} --wait --timeout={t}s",
        q(&p.restore_pod)
    );
    let d = &set.data_dir;
    let (stg, snap) = (q(&p.staging), q(&p.snapshot));
    let (dn, da, member) = (q(&p.data_new), q(&p.data_aside), q(&format!("{d}/member")));
    let stage_script = stage_script(p);
    let rm_stage = format!("rm -rf {stg}");
    let m = &set.member;
    let restore = format!(
        "cd {stg} && {} && chown -R \"$(stat -c %u:%g {member})\" {dn} && chmod \"$(stat -c %a {member})\" {dn}/member",
        snapshot_restore_command("etcdctl", l.skip_hash_check, m, &snap, &dn)
    );
    let rm_new = format!("rm -rf {dn}");
    let swap = format!("mv {member} {da} && mv {dn}/member {member} && rmdir {dn}");
    let swap_back = format!("if [ -e {da} ]; then rm -rf {member} && mv {da} {member}; fi");
    let health = crate::restore::plan::health_command(&l.etcdctl);
    let wait = format!(
        "{kubectl} wait --for=condition=Ready pod/{} --timeout={t}s && {kubectl} exec {} -c {} -- {}",
        q(&set.pod),
        q(&set.pod),
        q(&l.container),
        health.trim_start_matches("ETCDCTL_API=3 ")
    );
    let r = set.replicas;
    let mut entries = vec![
        (
            step(StepKind::Preflight, format!(
                "check that the kubeconfig's user may do every step (SelfSubjectAccessReviews) and read statefulset {}/{}: {r} replica(s), image {}, claim {} at {}, --data-dir={d}, member {} ({})",
                l.namespace, l.statefulset, set.image, set.claim, set.mount_path, m.name, m.initial_advertise_peer_urls
            ), String::new(), String::new()),
            (Action::Nothing, Action::Nothing),
        ),
        (
            step(StepKind::Verify, "verify the archive deeply (every layer) before anything in the cluster changes".into(), String::new(), String::new()),
            (Action::Nothing, Action::Nothing),
        ),
        (
            step(StepKind::ScaleDown, format!(
                "record {r} replica(s), scale statefulset {} to 0 and wait up to {t}s until pod {} is gone",
                l.statefulset, set.pod
            ), format!("{} && {}", scale(0), gone(&set.pod)), scale(r)),
            (Action::Scale(0), Action::Scale(r)),
        ),
        (
            step(StepKind::RestorePod, format!(
                "start pod {} (image {}) on claim {} at {} and wait until it runs",
                p.restore_pod,
                l.restore_image.as_deref().unwrap_or(&set.image),
                set.claim,
                set.mount_path
            ), create.clone(), delete.clone()),
            (Action::CreatePod, Action::DeletePod),
        ),
        (
            step(StepKind::Stage, format!(
                "stream the verified snapshot over exec stdin into {} (0700 dir on the volume) and check its sha256 there",
                p.snapshot
            ), format!("{} < the verified snapshot", in_pod(&stage_script).replacen(" exec ", " exec -i ", 1)), in_pod(&rm_stage)),
            (Action::Stage, Action::Shell(rm_stage.clone())),
        ),
        (
            step(StepKind::RestoreSnapshot, format!(
                "snapshot restore into {} as member {} ({}), owned like the old member/",
                p.data_new, m.name, m.initial_advertise_peer_urls
            ), in_pod(&restore), in_pod(&rm_new)),
            (Action::Shell(restore), Action::Shell(rm_new)),
        ),
        (
            step(StepKind::SwapDataDir, format!(
                "move the old {d}/member to {} (kept, never deleted) and the restored one into its place",
                p.data_aside
            ), in_pod(&swap), in_pod(&swap_back)),
            (Action::Shell(swap), Action::Shell(swap_back)),
        ),
        (
            step(StepKind::Cleanup, format!("remove the staged snapshot {}", p.staging), in_pod(&rm_stage), String::new()),
            (Action::Shell(rm_stage), Action::Nothing),
        ),
        (
            // Its undo brings the pod back: the undos before it run in it.
            step(StepKind::RemoveRestorePod, format!("delete pod {} and wait until it is gone", p.restore_pod), delete, create),
            (Action::DeletePod, Action::CreatePod),
        ),
        (
            step(StepKind::ScaleUp, format!("scale statefulset {} back to {r} replica(s)", l.statefulset), scale(r), format!("{} && {}", scale(0), gone(&set.pod))),
            (Action::Scale(r), Action::Scale(0)),
        ),
        (
            step(StepKind::WaitReady, format!(
                "wait up to {t}s for pod {} to be Ready and etcd healthy in it",
                set.pod
            ), wait, String::new()),
            (Action::WaitReady, Action::Nothing),
        ),
    ];
    if !l.apiserver_pod.is_empty() {
        entries.push((
            step(StepKind::RestartApiserver, format!(
                "delete pod {} (the user cluster's kube-apiserver: its watch cache may hold revisions newer than the restored etcd's) and wait up to {t}s until its controller's new pod is Ready; a failure is not rolled back (etcd already serves the backup)",
                l.apiserver_pod
            ), restart_apiserver_command(l), String::new()),
            (Action::RestartApiserver, Action::Nothing),
        ));
    }
    let (steps, actions) = entries.into_iter().unzip();
    UserPlan { steps, actions }
}

#[cfg(test)]
mod tests;
