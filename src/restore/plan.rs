//! The restore plan (design.md §6): named steps, each with what it changes on the node, the
//! shell it runs there, and the shell that undoes it. Pure: the plan is a value computed from
//! the node layout, the etcd member read from the node's own `etcd.yaml` and a restore id, so
//! `--dry-run` prints exactly what would run and tests check it without a node. The scripts
//! never delete what was on the node before the restore: the old data dir and PKI are moved
//! aside under names carrying the restore id, and undo scripts only remove what the restore
//! itself created.

use serde::{Deserialize, Serialize};

use crate::etcdctl::{quote, RemoteEtcdctl};

// The etcd member a node runs, read from its etcd.yaml.
mod member;
pub use member::{parse_member, wal_dir_unsupported, Member};
// Several nodes (HA): the nodes' plans in one order, the shared cluster, the quorum wait.
mod cluster;
pub use cluster::plan_all;
// The steps' kinds and names, for node and user-cluster plans.
mod kind;
pub use kind::StepKind;

/// Where things are on the node, and how to check on etcd there.
#[derive(Debug, Clone, Serialize)]
pub struct NodeLayout {
    /// The kubelet's static-pod manifests dir.
    pub manifests_dir: String,
    /// etcd's data dir.
    pub data_dir: String,
    /// The PKI dir.
    pub pki_dir: String,
    /// The admin kubeconfig.
    pub admin_conf: String,
    /// Where the staging dir is created.
    pub staging_parent: String,
    /// etcd's manifest file name.
    pub etcd_manifest: String,
    /// kube-apiserver's manifest file name.
    pub apiserver_manifest: String,
    /// How etcdctl runs on the node (for `snapshot restore` and the default health check).
    pub etcdctl: RemoteEtcdctl,
    /// Exits 0 once etcd and kube-apiserver have stopped.
    pub stopped_check: String,
    /// Exits 0 once etcd (and kube-apiserver) serve again; `None`: etcdctl's endpoint health
    /// with [`NodeLayout::etcdctl`]'s settings, then kube-apiserver's `/readyz`.
    pub ready_check: Option<String>,
    /// Seconds to wait for stopped/ready.
    pub wait_seconds: u64,
    /// `snapshot restore --skip-hash-check`: for a snapshot without etcd's sha256 trailer
    /// (the archive's own checksums still cover it).
    pub skip_hash_check: bool,
    /// `--shrink-to-one-member`: restore this node as a cluster of one, its etcd.yaml
    /// rewritten to name only itself (the old one kept and put back on rollback).
    pub shrink_to_one_member: bool,
}

impl NodeLayout {
    /// The readiness check in effect.
    pub fn ready_check(&self) -> String {
        self.ready_check.clone().unwrap_or_else(|| {
            format!(
                "{} && curl -fsk -m 5 https://127.0.0.1:6443/readyz >/dev/null",
                health_command(&self.etcdctl)
            )
        })
    }

    /// kubeadm's (and GKE on VMware admin clusters') layout, with etcdctl on the node.
    pub fn kubeadm() -> NodeLayout {
        NodeLayout {
            manifests_dir: "/etc/kubernetes/manifests".into(),
            data_dir: "/var/lib/etcd".into(),
            pki_dir: "/etc/kubernetes/pki".into(),
            admin_conf: "/etc/kubernetes/admin.conf".into(),
            staging_parent: "/var/tmp".into(),
            etcd_manifest: "etcd.yaml".into(),
            apiserver_manifest: "kube-apiserver.yaml".into(),
            // A failing crictl must not read as "stopped".
            stopped_check: "o=$(crictl ps -q --name '^(etcd|kube-apiserver)$') && test -z \"$o\""
                .into(),
            ready_check: None,
            etcdctl: RemoteEtcdctl::kubeadm(),
            wait_seconds: 300,
            skip_hash_check: false,
            shrink_to_one_member: false,
        }
    }
}

/// `etcdctl endpoint health` with the layout's endpoint and certificates.
pub fn health_command(e: &RemoteEtcdctl) -> String {
    format!("{} endpoint health", e.invocation())
}

/// Which node a step runs on: an index into the nodes the restore spans (the order of
/// `--ssh`). A plan over every member of an HA control plane is the same steps with other
/// indexes ([`plan_all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeId(pub usize);

/// One step of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// What it is; serialized as its `name`.
    #[serde(rename = "name")]
    pub kind: StepKind,
    /// Where it runs (not printed: a one-node plan says the node once, at the top).
    #[serde(skip)]
    pub node: NodeId,
    /// What it does, for people.
    pub does: String,
    /// Whether it changes the node.
    pub changes_node: bool,
    /// Shell run on the node (empty: the step runs locally).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub script: String,
    /// Shell that undoes it on the node (empty: nothing to undo).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub undo: String,
}

/// Paths the plan derives from the layout and the restore id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paths {
    /// 0700 dir holding the streamed archive content.
    pub staging: String,
    /// Where the two manifests wait while the control plane is stopped.
    pub manifests_aside: String,
    /// The old `member/` dir, kept inside the data dir (same filesystem, so the move is a
    /// rename even when the data dir is a mount point; etcd only warns about the extra name).
    pub data_aside: String,
    /// Where `snapshot restore` writes before its `member/` is moved into place.
    pub data_new: String,
    /// The old PKI dir, kept.
    pub pki_aside: String,
    /// The node's etcd.yaml as it was, kept when `--shrink-to-one-member` rewrites it.
    #[serde(default)]
    pub etcd_manifest_before: String,
}

/// Derives the paths for `restore_id`.
pub fn paths(l: &NodeLayout, restore_id: &str) -> Paths {
    let parent = |p: &str| {
        let p = p.trim_end_matches('/');
        match p.rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((d, _)) => d.to_string(),
        }
    };
    Paths {
        staging: format!("{}/{restore_id}", l.staging_parent.trim_end_matches('/')),
        manifests_aside: format!("{}/{restore_id}.manifests", parent(&l.manifests_dir)),
        data_aside: format!(
            "{}/member.before-{restore_id}",
            l.data_dir.trim_end_matches('/')
        ),
        data_new: format!("{}/.{restore_id}", l.data_dir.trim_end_matches('/')),
        pki_aside: format!("{}.before-{restore_id}", l.pki_dir.trim_end_matches('/')),
        etcd_manifest_before: format!(
            "{}/{}.before-{restore_id}",
            parent(&l.manifests_dir).trim_end_matches('/'),
            l.etcd_manifest
        ),
    }
}

/// Escapes `s` for the replacement side of a `sed s#…#…#` command.
fn sed_replacement(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '&' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The step that rewrites the moved-out etcd.yaml (in `aside`) for a cluster of `alone`, the
/// member alone; the old file is kept at `before` and put back by the undo.
fn shrink_step(l: &NodeLayout, p: &Paths, alone: &Member, node: NodeId) -> Step {
    let q = |s: &str| quote(s);
    let yaml = q(&format!("{}/{}", p.manifests_aside, l.etcd_manifest));
    let before = q(&p.etcd_manifest_before);
    let tmp = q(&format!("{}.tmp", p.etcd_manifest_before));
    let flag = format!("--initial-cluster={}", alone.initial_cluster);
    // The `- --initial-cluster=…` item, quoted or not; the state flag of a joining member.
    let cluster = format!(
        "s#^\\([[:space:]]*-[[:space:]]*[\"']\\{{0,1\\}}\\)--initial-cluster=[^\"'[:space:]]*#\\1{}#",
        sed_replacement(&flag)
    );
    let state = "s#--initial-cluster-state=existing#--initial-cluster-state=new#";
    Step {
        kind: StepKind::ShrinkToOneMember,
        node,
        does: format!(
            "rewrite {} for a cluster of {} alone ({flag}, --initial-cluster-state=new); the old one is kept at {}",
            l.etcd_manifest, alone.name, p.etcd_manifest_before
        ),
        changes_node: true,
        script: format!(
            "cp -p {yaml} {tmp} && mv {tmp} {before} && sed -i -e {} -e {} {yaml} && grep -qF -e {} {yaml}",
            q(&cluster),
            q(state),
            q(&flag),
        ),
        undo: format!("rm -f {tmp}; if [ -e {before} ]; then mv {before} {yaml}; fi"),
    }
}

/// A script that runs `check` until it succeeds, every 0.2 s (a check is one cheap command
/// on the node; a coarser poll only adds up to its interval to every wait), for at most
/// `seconds`.
pub(crate) fn wait_for(check: &str, what: &str, seconds: u64) -> String {
    format!(
        "end=$(( $(date +%s) + {seconds} )); until ( {check} ) >/dev/null 2>&1; do if [ $(date +%s) -ge $end ]; then echo 'timed out after {seconds}s waiting until {what} (check: {})' >&2; exit 1; fi; sleep 0.2; done",
        check.replace('\'', "")
    )
}

/// `snapshot restore` on the node. etcd 3.5 deprecated `etcdctl snapshot restore` in favour
/// of `etcdutl`, and 3.6 removed it, so with the default etcdctl the script prefers etcdutl
/// where the node has it; a configured etcdctl command is used as given.
fn restore_command(l: &NodeLayout, m: &Member, snapshot: &str, data: &str) -> String {
    snapshot_restore_command(&l.etcdctl.command, l.skip_hash_check, m, snapshot, data)
}

/// `snapshot restore` of `snapshot` (already quoted) into `data` (already quoted) as member
/// `m`, with etcdutl where there is one when `etcdctl` is the plain default.
pub(crate) fn snapshot_restore_command(
    etcdctl: &str,
    skip_hash_check: bool,
    m: &Member,
    snapshot: &str,
    data: &str,
) -> String {
    let args = format!(
        "snapshot restore {snapshot} --data-dir={data} --name={} --initial-cluster={} --initial-advertise-peer-urls={}{}{}",
        quote(&m.name),
        quote(&m.initial_cluster),
        quote(&m.initial_advertise_peer_urls),
        match &m.initial_cluster_token {
            Some(t) => format!(" --initial-cluster-token={}", quote(t)),
            None => String::new(),
        },
        if skip_hash_check {
            " --skip-hash-check"
        } else {
            ""
        },
    );
    let full = format!("ETCDCTL_API=3 {etcdctl} {args}");
    if etcdctl == "etcdctl" {
        format!("if command -v etcdutl >/dev/null 2>&1; then etcdutl {args}; else {full}; fi")
    } else {
        full
    }
}

/// The whole plan for the node `node`, in order; the recovery kit's steps (only for what
/// `kit` holds) come after the PKI, before the control plane starts.
pub fn plan(
    l: &NodeLayout,
    m: &Member,
    restore_id: &str,
    kubeconfig_out: &str,
    kit: &super::kit::KitFiles,
    node: NodeId,
) -> Vec<Step> {
    let p = paths(l, restore_id);
    let alone = m.alone();
    let m = if l.shrink_to_one_member { &alone } else { m };
    let q = |s: &str| quote(s);
    let (man, data, pki) = (q(&l.manifests_dir), q(&l.data_dir), q(&l.pki_dir));
    let (staging, aside) = (q(&p.staging), q(&p.manifests_aside));
    let (da, dn, pa) = (q(&p.data_aside), q(&p.data_new), q(&p.pki_aside));
    let (etcd_y, api_y) = (q(&l.etcd_manifest), q(&l.apiserver_manifest));
    let move_out = format!(
        "mkdir -m 0700 {aside} && for f in {etcd_y} {api_y}; do if [ -e {man}/$f ]; then mv {man}/$f {aside}/; fi; done"
    );
    // Undoing start-control-plane: also right when the step never ran (the journal's step in
    // flight), where the aside dir still holds the manifests.
    let move_out_again = format!(
        "mkdir -p -m 0700 {aside} && for f in {etcd_y} {api_y}; do if [ -e {man}/$f ]; then mv {man}/$f {aside}/; fi; done"
    );
    let move_back = format!(
        "for f in {etcd_y} {api_y}; do if [ -e {aside}/$f ]; then mv {aside}/$f {man}/; fi; done; rmdir {aside} 2>/dev/null; true"
    );
    let kit_steps = super::kit::steps(l, &p, restore_id, kit, node);
    let mut steps = vec![
        Step {
            kind: StepKind::Preflight,
            node,
            does: "check that no certificate in the backup has expired (unless --force-expired), the tools, sudo, free space for 2× the snapshot, the node's etcd member flags, and that the node's CA is the archive's".into(),
            changes_node: false,
            script: String::new(),
            undo: String::new(),
        },
        Step {
            kind: StepKind::Verify,
            node,
            does: "verify the archive deeply (every layer) before anything on the node changes".into(),
            changes_node: false,
            script: String::new(),
            undo: String::new(),
        },
        Step {
            kind: StepKind::Stage,
            node,
            does: format!("stream the snapshot and PKI into {} (0700) and check their sha256 there", p.staging),
            changes_node: true,
            script: format!("umask 077 && mkdir -m 0700 {staging}"),
            undo: format!("rm -rf {staging}"),
        },
        Step {
            kind: StepKind::StopControlPlane,
            node,
            does: format!(
                "move {} and {} out of {} to {}, and wait until etcd and kube-apiserver stopped",
                l.etcd_manifest, l.apiserver_manifest, l.manifests_dir, p.manifests_aside
            ),
            changes_node: true,
            script: format!(
                "{move_out} && {}",
                wait_for(&l.stopped_check, "etcd and kube-apiserver stopped", l.wait_seconds)
            ),
            undo: move_back.clone(),
        },
        Step {
            kind: StepKind::MoveAside,
            node,
            does: format!(
                "move the current etcd data ({}/member) to {} and the PKI to {} (kept, never deleted)",
                l.data_dir, p.data_aside, p.pki_aside
            ),
            changes_node: true,
            script: format!("mv {data}/member {da} && mv {pki} {pa}"),
            undo: format!(
                "if [ -e {da} ]; then rm -rf {data}/member && mv {da} {data}/member; fi; if [ -e {pa} ]; then rm -rf {pki} && mv {pa} {pki}; fi"
            ),
        },
        Step {
            kind: StepKind::RestoreSnapshot,
            node,
            does: format!(
                "etcdctl snapshot restore as member {} ({}), its member/ moved into {} and owned like the old one",
                m.name, m.initial_advertise_peer_urls, l.data_dir
            ),
            changes_node: true,
            script: format!(
                "cd {staging} && {} && mv {dn}/member {data}/member && rmdir {dn} && chown -R \"$(stat -c %u:%g {da})\" {data}/member && chmod \"$(stat -c %a {da})\" {data}/member",
                restore_command(l, m, &format!("{staging}/etcd/snapshot.db"), &dn),
            ),
            // Only ever what this step made: the old member/ is aside whenever it ran.
            undo: format!("rm -rf {dn}; if [ -e {da} ]; then rm -rf {data}/member; fi"),
        },
        Step {
            kind: StepKind::Pki,
            node,
            does: format!("put the archive's PKI into {} with its recorded modes", l.pki_dir),
            changes_node: true,
            // Staged files are root's (tar --no-same-owner); a file that existed before gets
            // its old owner back, so an etcd running as its own user can still read its keys.
            script: format!(
                "cp -a {staging}/pki {pki} && chown \"$(stat -c %u:%g {pa})\" {pki} && chmod \"$(stat -c %a {pa})\" {pki} && (cd {pki} && find . -mindepth 1 | while IFS= read -r f; do if [ -e {pa}/\"$f\" ]; then chown \"$(stat -c %u:%g {pa}/\"$f\")\" \"$f\"; fi; done)",
                pa = q(&p.pki_aside)
            ),
            undo: format!("if [ -e {pa} ]; then rm -rf {pki}; fi", pa = q(&p.pki_aside)),
        },
    ];
    steps.extend(kit_steps);
    steps.extend([
        Step {
            kind: StepKind::StartControlPlane,
            node,
            does: format!("move the manifests back into {}", l.manifests_dir),
            changes_node: true,
            script: move_back,
            undo: format!(
                "{move_out_again} && {}",
                wait_for(
                    &l.stopped_check,
                    "etcd and kube-apiserver stopped",
                    l.wait_seconds
                )
            ),
        },
        Step {
            kind: StepKind::WaitReady,
            node,
            does: format!(
                "wait up to {}s for etcd health and apiserver readiness",
                l.wait_seconds
            ),
            changes_node: false,
            script: wait_for(
                &l.ready_check(),
                "etcd and kube-apiserver are ready",
                l.wait_seconds,
            ),
            undo: String::new(),
        },
        Step {
            kind: StepKind::Kubeconfig,
            node,
            does: format!("fetch {} to {kubeconfig_out} (0600)", l.admin_conf),
            changes_node: false,
            script: format!("cat {}", q(&l.admin_conf)),
            undo: String::new(),
        },
        Step {
            kind: StepKind::Cleanup,
            node,
            does: format!(
                "remove the staging dir {} (it holds the CA keys in plaintext)",
                p.staging
            ),
            changes_node: true,
            script: format!("rm -rf {staging}"),
            undo: String::new(),
        },
    ]);
    if l.shrink_to_one_member {
        let at = steps
            .iter()
            .position(|s| s.kind == StepKind::StopControlPlane)
            .expect("the plan stops the control plane")
            + 1;
        steps.insert(at, shrink_step(l, &p, m, node));
    }
    steps
}

#[cfg(test)]
mod tests;
