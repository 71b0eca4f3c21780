//! The recovery kit's restore steps (design.md §10): the backup's encryption config, static-pod
//! manifests and admin.conf put back on the node after the PKI and before the control plane
//! starts, so kube-apiserver reads the restored etcd with the keys its Secrets were written
//! with. Pure, like the rest of the plan. Each replaced file is moved into a 0700 dir beside
//! the manifests dir (`<restore id>.kit-before`, mirroring its absolute path) and kept; never
//! beside the original, because the kubelet would run a copy left in the manifests dir. A
//! file that did not exist leaves an `.absent` marker there instead, so an undo removes only
//! what the restore created, and an undo of a step that never ran changes nothing.

use crate::archive::manifest::Manifest;
use crate::etcdctl::quote;
use crate::sources::kit::{ADMIN_CONF_ENTRY, ENCRYPTION_PREFIX, MANIFESTS_PREFIX};

use super::plan::{NodeId, NodeLayout, Paths, Step, StepKind};

/// What of the kit a backup holds, as archive paths and the node paths they go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitFiles {
    /// The encryption config: its entry and the path kube-apiserver reads it from.
    pub encryption: Option<(String, String)>,
    /// The static-pod manifests' names (relative to the manifests dir).
    pub manifests: Vec<String>,
    /// Whether admin.conf is in the backup.
    pub admin_conf: bool,
}

/// The kit in `m` (none for a backup without one) that the restore onto a node laid out as
/// `l` puts back. Two things are left in the archive (for `extract`):
/// - the backup's etcd.yaml and kube-apiserver.yaml: the node's own carry its member name,
///   addresses and data dir, which preflight read and `snapshot restore` used, and the
///   backup may come from another node of the cluster;
/// - an encryption config whose recorded place is not a plain absolute path under the
///   manifests dir's parent (`/etc/kubernetes`), or is inside the manifests or PKI dir or is
///   admin.conf: the place comes from the manifest, and the restore writes there as root.
pub fn kit_files(m: &Manifest, l: &NodeLayout) -> KitFiles {
    let mut k = KitFiles::default();
    let info = m.kit.clone().unwrap_or_default();
    for e in &m.entries {
        if let Some(name) = e.path.strip_prefix(MANIFESTS_PREFIX) {
            if name != l.etcd_manifest && name != l.apiserver_manifest {
                k.manifests.push(name.to_string());
            }
        } else if e.path.starts_with(ENCRYPTION_PREFIX) {
            if let Some(target) = info
                .encryption_config
                .as_ref()
                .filter(|t| encryption_target_allowed(t, l))
            {
                k.encryption = Some((e.path.clone(), target.clone()));
            }
        } else if e.path == ADMIN_CONF_ENTRY {
            k.admin_conf = true;
        }
    }
    k
}

/// Whether the restore may write the encryption config at `target` (see [`kit_files`]).
pub fn encryption_target_allowed(target: &str, l: &NodeLayout) -> bool {
    let within = |dir: &str| {
        let dir = dir.trim_end_matches('/');
        !dir.is_empty() && (target == dir || target.starts_with(&format!("{dir}/")))
    };
    let man = l.manifests_dir.trim_end_matches('/');
    let parent = man.rsplit_once('/').map_or("", |(d, _)| d);
    plain_absolute(target)
        && !parent.is_empty()
        && target.starts_with(&format!("{parent}/"))
        && !within(man)
        && !within(&l.pki_dir)
        && target != l.admin_conf
}

/// Whether `path` is a plain absolute path (no `..`, `.` or empty component, no control
/// character): the encryption config's place comes from the manifest, and the restore writes
/// there as root.
fn plain_absolute(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    }) && !path.chars().any(char::is_control)
}

/// Where the files a kit step replaces are kept.
pub fn kit_aside(l: &NodeLayout, restore_id: &str) -> String {
    let m = l.manifests_dir.trim_end_matches('/');
    let parent = match m.rsplit_once('/') {
        Some(("", _)) | None => "",
        Some((d, _)) => d,
    };
    format!("{parent}/{restore_id}.kit-before")
}

/// Script and undo that put `staged` at `target`, keeping what was there in `aside_root`.
fn put(staged: &str, target: &str, aside_root: &str) -> (String, String) {
    let aside = format!("{}/{}", aside_root, target.trim_start_matches('/'));
    let (t, a, s, root) = (
        quote(target),
        quote(&aside),
        quote(staged),
        quote(aside_root),
    );
    let absent = quote(&format!("{aside}.absent"));
    let script = format!(
        "mkdir -p -m 0700 {root} && mkdir -p \"$(dirname {a})\" && if [ -e {t} ]; then mv {t} {a}; else : > {absent}; fi && mkdir -p \"$(dirname {t})\" && cp -p {s} {t} && if [ -e {a} ]; then chown \"$(stat -c %u:%g {a})\" {t}; fi"
    );
    let undo = format!(
        "if [ -e {a} ]; then rm -f {t} && mv {a} {t}; elif [ -e {absent} ]; then rm -f {t} {absent}; fi"
    );
    (script, undo)
}

fn step(
    kind: StepKind,
    node: NodeId,
    does: String,
    files: &[(String, String)],
    root: &str,
) -> Step {
    let (scripts, undos): (Vec<String>, Vec<String>) =
        files.iter().map(|(s, t)| put(s, t, root)).unzip();
    Step {
        kind,
        node,
        does,
        changes_node: true,
        script: scripts.join(" && "),
        // In reverse, each independent: a partly run step undoes what it did; then the
        // aside dirs this restore made, once empty.
        undo: format!(
            "{}; if [ -d {r} ]; then find {r} -depth -type d -empty -delete; fi; true",
            undos.into_iter().rev().collect::<Vec<_>>().join("; "),
            r = quote(root)
        ),
    }
}

/// The kit's steps for `node`, in order: encryption config, manifests, admin.conf (each only
/// when the backup holds it).
pub fn steps(l: &NodeLayout, p: &Paths, restore_id: &str, k: &KitFiles, node: NodeId) -> Vec<Step> {
    let root = kit_aside(l, restore_id);
    let staged = |entry: &str| format!("{}/{entry}", p.staging);
    let mut out = vec![];
    if let Some((entry, target)) = &k.encryption {
        out.push(step(
            StepKind::EncryptionConfig,
            node,
            format!("put the backup's encryption config at {target} (kube-apiserver's --encryption-provider-config) before the apiserver starts; the old one is kept in {root}"),
            &[(staged(entry), target.clone())],
            &root,
        ));
    }
    if !k.manifests.is_empty() {
        let man = l.manifests_dir.trim_end_matches('/');
        let files: Vec<(String, String)> = k
            .manifests
            .iter()
            .map(|name| {
                (
                    staged(&format!("{MANIFESTS_PREFIX}{name}")),
                    format!("{man}/{name}"),
                )
            })
            .collect();
        out.push(step(
            StepKind::Manifests,
            node,
            format!(
                "put the backup's static-pod manifests ({}) in {man}; the node's own {} and {} stay (they carry its name, addresses and data dir); the old ones are kept in {root}",
                k.manifests.join(", "),
                l.etcd_manifest,
                l.apiserver_manifest,
            ),
            &files,
            &root,
        ));
    }
    if k.admin_conf {
        out.push(step(
            StepKind::AdminConf,
            node,
            format!(
                "put the backup's admin.conf at {}; the old one is kept in {root}",
                l.admin_conf
            ),
            &[(staged(ADMIN_CONF_ENTRY), l.admin_conf.clone())],
            &root,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_is_kept_aside_and_an_undo_removes_only_what_the_restore_made() {
        let (script, undo) = put(
            "/s/files/kit/admin.conf",
            "/etc/kubernetes/admin.conf",
            "/etc/r1.kit-before",
        );
        assert!(
            script.contains(
                "mv /etc/kubernetes/admin.conf /etc/r1.kit-before/etc/kubernetes/admin.conf"
            ),
            "{script}"
        );
        assert!(
            script.contains(": > /etc/r1.kit-before/etc/kubernetes/admin.conf.absent"),
            "{script}"
        );
        assert!(!script.contains("rm "), "{script}");
        assert_eq!(
            undo,
            "if [ -e /etc/r1.kit-before/etc/kubernetes/admin.conf ]; then rm -f /etc/kubernetes/admin.conf && mv /etc/r1.kit-before/etc/kubernetes/admin.conf /etc/kubernetes/admin.conf; elif [ -e /etc/r1.kit-before/etc/kubernetes/admin.conf.absent ]; then rm -f /etc/kubernetes/admin.conf /etc/r1.kit-before/etc/kubernetes/admin.conf.absent; fi"
        );
    }

    #[test]
    fn the_encryption_config_goes_only_to_a_plain_absolute_path() {
        assert!(plain_absolute("/etc/kubernetes/enc/enc.yaml"));
        for bad in [
            "enc.yaml",
            "/etc/../root/.ssh/x",
            "/etc//x",
            "/etc/x\n",
            "/",
        ] {
            assert!(!plain_absolute(bad), "{bad}");
        }
    }

    #[test]
    fn the_encryption_config_goes_only_under_the_kubernetes_dir_outside_manifests_and_pki() {
        let l = NodeLayout::kubeadm();
        for good in [
            "/etc/kubernetes/enc/enc.yaml",
            "/etc/kubernetes/encryption-config.yaml",
        ] {
            assert!(encryption_target_allowed(good, &l), "{good}");
        }
        for bad in [
            "/etc/sudoers.d/x",
            "/root/.ssh/authorized_keys",
            "/etc/kubernetes/manifests/x.yaml",
            "/etc/kubernetes/pki/ca.key",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes",
            "/etc/kubernetes-evil/x",
            "/etc/kubernetes/../x",
        ] {
            assert!(!encryption_target_allowed(bad, &l), "{bad}");
        }
    }

    #[test]
    fn manifests_go_to_the_manifests_dir() {
        let l = NodeLayout::kubeadm();
        let p = super::super::plan::paths(&l, "r1");
        let k = KitFiles {
            encryption: Some((
                "files/kit/encryption/enc.yaml".into(),
                "/etc/kubernetes/enc/enc.yaml".into(),
            )),
            manifests: vec!["kube-scheduler.yaml".into()],
            admin_conf: true,
        };
        let s = steps(&l, &p, "r1", &k, NodeId(0));
        let kinds: Vec<StepKind> = s.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                StepKind::EncryptionConfig,
                StepKind::Manifests,
                StepKind::AdminConf
            ]
        );
        assert!(s[0].script.contains(
            "cp -p /var/tmp/r1/files/kit/encryption/enc.yaml /etc/kubernetes/enc/enc.yaml"
        ));
        assert!(s[1].script.contains("cp -p /var/tmp/r1/files/kit/manifests/kube-scheduler.yaml /etc/kubernetes/manifests/kube-scheduler.yaml"));
        // Nothing is left beside a manifest: the kubelet would run it.
        assert!(s.iter().all(|s| !s
            .script
            .contains(" /etc/kubernetes/manifests/kube-scheduler.yaml.")));
        assert_eq!(kit_aside(&l, "r1"), "/etc/kubernetes/r1.kit-before");
        assert!(steps(&l, &p, "r1", &KitFiles::default(), NodeId(0)).is_empty());
    }
}
