//! The recovery kit a node backup carries next to etcd and the PKI (design.md §10): the
//! static-pod manifests, the EncryptionConfiguration kube-apiserver names with
//! `--encryption-provider-config` (without its keys every Secret in a restored etcd is
//! unreadable), and `admin.conf`. They are read over the node's SSH connection with `tar`
//! (under sudo, like the PKI) into memory and stored as `files/kit/…` entries, so archives
//! stay readable by every v1 reader. Nothing on the node is changed, and nothing is silently
//! missing: an encryption config the apiserver names that cannot be read fails the backup
//! unless `--no-encryption-config`; a node without a manifests dir or admin.conf is a warning.

use super::ssh::{Node, NodeFile, TarFailure};
use super::SourceError;
use crate::archive::manifest::{EntryKind, KitInfo};
use crate::archive::writer::SourceEntry;
use crate::etcdctl::quote;

/// Archive prefix of the static-pod manifests.
pub const MANIFESTS_PREFIX: &str = "files/kit/manifests/";
/// Archive prefix of the encryption config (its file name follows).
pub const ENCRYPTION_PREFIX: &str = "files/kit/encryption/";
/// Archive path of admin.conf.
pub const ADMIN_CONF_ENTRY: &str = "files/kit/admin.conf";
/// The name `--file` may not take: the kit's dir.
pub const KIT_FILE_NAME: &str = "files/kit";

/// What to read, and where it is on the node.
#[derive(Debug, Clone)]
pub struct KitSettings {
    /// The static-pod manifests dir.
    pub manifests_dir: String,
    /// The admin kubeconfig.
    pub admin_conf: String,
    /// Whether to capture the encryption config the apiserver names.
    pub encryption_config: bool,
}

/// The kit's entries, what the manifest records of it, and what to warn about.
pub struct Kit {
    /// `files/kit/…` entries.
    pub entries: Vec<SourceEntry>,
    /// Where each part came from on the node.
    pub info: KitInfo,
    /// Parts the node does not have.
    pub warnings: Vec<String>,
}

/// Why a single file could not be read: absent, or another failure.
enum Single {
    Absent,
    Failed(SourceError),
}

/// `(dir, name)` of an absolute path.
fn split(path: &str) -> (String, String) {
    let p = path.trim_end_matches('/');
    match p.rsplit_once('/') {
        Some(("", name)) => ("/".into(), name.into()),
        Some((dir, name)) => (dir.into(), name.into()),
        None => (".".into(), p.into()),
    }
}

/// The script that tars one file (following a symlink to it) with its mode.
fn single_script(path: &str) -> String {
    let (dir, name) = split(path);
    format!("exec tar -h -C {} -cf - {}", quote(&dir), quote(&name))
}

/// The script that tars a dir's content.
fn dir_script(dir: &str) -> String {
    format!("exec tar -C {} -cf - .", quote(dir))
}

async fn read_single(node: &Node, path: &str) -> Result<NodeFile, Single> {
    let out = node
        .run(&format!("test -e {}", quote(path)))
        .await
        .map_err(Single::Failed)?;
    if !out.status.success() {
        return Err(Single::Absent);
    }
    match node.tar_files(&single_script(path)).await {
        Ok(mut files) if files.len() == 1 => Ok(files.remove(0)),
        Ok(_) => Err(Single::Failed(fail(
            node,
            format!("{path} on the node is not a regular file"),
            "check the path",
        ))),
        Err(e) => Err(Single::Failed(tar_failure(node, path, e))),
    }
}

fn fail(node: &Node, message: String, fix: &str) -> SourceError {
    SourceError::Ssh {
        destination: node.destination(),
        message,
        fix: fix.into(),
    }
}

fn tar_failure(node: &Node, what: &str, e: TarFailure) -> SourceError {
    match e {
        TarFailure::Ssh(e) => e,
        TarFailure::TooLarge => fail(
            node,
            format!("{what} holds more than 64 MiB"),
            "check the path",
        ),
        TarFailure::Failed(said) => fail(
            node,
            format!("cannot read {what}: {said}"),
            "check that the user (or sudo) may read it",
        ),
        TarFailure::Unreadable(e) => fail(
            node,
            format!("the tar stream of {what} is unreadable: {e}"),
            "check that GNU tar or busybox tar is on the node",
        ),
    }
}

/// The encryption config's path named in the apiserver's manifest, if any.
pub fn encryption_config_named(apiserver_yaml: &str) -> Option<String> {
    crate::etcdctl::static_pod_flag(apiserver_yaml, "encryption-provider-config")
        .filter(|p| !p.is_empty())
}

/// Reads the kit from `node`.
///
/// # Errors
/// [`SourceError::Ssh`] when a part that exists cannot be read, or when the apiserver names
/// an encryption config that cannot be read (unless `s.encryption_config` is off) — naming
/// the file and `--no-encryption-config`.
pub async fn read(node: &Node, s: &KitSettings) -> Result<Kit, SourceError> {
    let mut kit = Kit {
        entries: vec![],
        info: KitInfo::default(),
        warnings: vec![],
    };
    let dir = s.manifests_dir.trim_end_matches('/');
    let mut apiserver_yaml = None;
    let out = node.run(&format!("test -d {}", quote(dir))).await?;
    if out.status.success() {
        let files = node
            .tar_files(&dir_script(dir))
            .await
            .map_err(|e| tar_failure(node, &format!("the manifests dir {dir}"), e))?;
        for f in files {
            if f.rel == "kube-apiserver.yaml" {
                apiserver_yaml = Some(String::from_utf8_lossy(&f.data).into_owned());
            }
            kit.entries
                .push(f.into_entry(MANIFESTS_PREFIX, EntryKind::File));
        }
        kit.info.manifests_dir = Some(dir.to_string());
    } else {
        kit.warnings.push(format!(
            "the node has no static-pod manifests dir {dir}, so the backup holds no manifests and cannot tell whether kube-apiserver uses an encryption config; pass --ssh-manifests-dir DIR"
        ));
    }
    match apiserver_yaml.as_deref().map(encryption_config_named) {
        Some(Some(path)) if s.encryption_config => {
            let no = |cause: String| {
                fail(
                    node,
                    format!("kube-apiserver's --encryption-provider-config names {path}, which cannot be read ({cause}); without it every Secret in a restored etcd is unreadable"),
                    "make it readable to the SSH user (or sudo), or pass --no-encryption-config to back up without it (keep its keys safe elsewhere)",
                )
            };
            let f = match read_single(node, &path).await {
                Ok(f) => f,
                Err(Single::Absent) => return Err(no("it does not exist".into())),
                Err(Single::Failed(SourceError::Ssh { message, .. })) => return Err(no(message)),
                Err(Single::Failed(e)) => return Err(e),
            };
            kit.entries
                .push(f.into_entry(ENCRYPTION_PREFIX, EntryKind::File));
            kit.info.encryption_config = Some(path);
        }
        Some(Some(path)) => {
            kit.warnings.push(format!(
                "--no-encryption-config: kube-apiserver's encryption config {path} is NOT in this backup; a restore needs its keys from elsewhere, or every Secret is unreadable"
            ));
            kit.info.encryption_config_left_out = Some(path);
        }
        Some(None) => {}
        None if kit.info.manifests_dir.is_some() => kit.warnings.push(format!(
            "{dir} has no kube-apiserver.yaml, so the backup cannot tell whether an encryption config is used"
        )),
        None => {}
    }
    match read_single(node, &s.admin_conf).await {
        Ok(mut f) => {
            f.rel = String::new();
            kit.entries.push(f.into_entry(ADMIN_CONF_ENTRY, EntryKind::File));
            kit.info.admin_conf = Some(s.admin_conf.clone());
        }
        Err(Single::Absent) => kit.warnings.push(format!(
            "the node has no {}, so the backup holds no admin kubeconfig; pass --ssh-admin-conf PATH",
            s.admin_conf
        )),
        Err(Single::Failed(e)) => return Err(e),
    }
    Ok(kit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encryption_config_is_read_from_the_apiserver_flags() {
        let api = "    command:\n    - kube-apiserver\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n";
        assert_eq!(
            encryption_config_named(api).as_deref(),
            Some("/etc/kubernetes/enc/enc.yaml")
        );
        assert_eq!(encryption_config_named("    - kube-apiserver\n"), None);
    }

    #[test]
    fn single_files_are_tarred_from_their_dir() {
        assert_eq!(
            single_script("/etc/kubernetes/admin.conf"),
            "exec tar -h -C /etc/kubernetes -cf - admin.conf"
        );
        assert_eq!(
            split("/admin.conf"),
            ("/".to_string(), "admin.conf".to_string())
        );
        assert_eq!(dir_script("/m d"), "exec tar -C '/m d' -cf - .");
    }
}
