//! The version guard: etcd reads the data of an older minor release, not of a newer one, so a
//! snapshot taken from a newer etcd minor than the one that will run the restored data is
//! refused before anything changes, unless the user forces it. Pure: it reads version strings
//! (the manifest's, an image tag, `etcd --version`'s output) and compares them; finding the
//! installed version is the caller's.

/// An etcd version's `(major, minor)`, read from `3.5.9`, `v3.5.9` or an image tag such as
/// `3.5.9-0`; `None` when the text is not one.
pub fn major_minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The version in a static-pod manifest's etcd image (`image: registry.k8s.io/etcd:3.5.9-0`),
/// without the image's own `-N` suffix; `None` when no image tag names one.
pub fn from_image(manifest: &str) -> Option<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("image:"))
        .map(|i| i.trim().trim_matches(|c| c == '"' || c == '\''))
        // A digest (`…:3.5.9-0@sha256:…`) pins the image; the tag is before it.
        .map(|i| i.split('@').next().unwrap_or(i))
        .filter_map(|image| {
            let (repo, tag) = image.rsplit_once(':')?;
            // A registry port (`host:5000/etcd`) is not a tag.
            (!tag.contains('/') && repo.rsplit('/').next()?.contains("etcd")).then_some(tag)
        })
        .map(|tag| tag.split('@').next().unwrap_or(tag))
        .map(|tag| {
            tag.trim_start_matches('v')
                .split('-')
                .next()
                .unwrap_or(tag)
                .to_string()
        })
        .find(|v| major_minor(v).is_some())
}

/// The version `etcd --version` printed (`etcd Version: 3.4.23`).
pub fn from_etcd_version_output(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .filter(|v| major_minor(v).is_some())
}

/// The etcd that will run the restored data, and where its version was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its version (`3.4.23`).
    pub version: String,
    /// Where it was read (`the etcd image in /etc/kubernetes/manifests/etcd.yaml`).
    pub from: String,
}

/// Why a snapshot is refused: it needs a newer etcd than `installed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooNew {
    /// The snapshot's etcd version, as recorded at backup time.
    pub snapshot: String,
    /// The etcd that would run it.
    pub installed: Installed,
}

impl std::fmt::Display for TooNew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = major_minor(&self.snapshot).unwrap_or_default();
        write!(
            f,
            "the snapshot was taken from etcd {} and needs etcd {major}.{minor} or newer, but etcd {} is installed ({}); an older etcd cannot read a newer minor's data; nothing was changed — restore where etcd {major}.{minor} or newer runs, or pass --force-version to restore anyway",
            crate::text::escape_for_line(&self.snapshot, 60),
            self.installed.version,
            self.installed.from
        )
    }
}

/// Checks the snapshot's recorded version against the installed one; `force` accepts any.
/// Nothing to compare (no recorded version, none installed found, or one unreadable) passes:
/// the guard refuses only what it knows to be too new.
///
/// # Errors
/// [`TooNew`] when the snapshot's `(major, minor)` is newer than the installed one's.
pub fn check(
    snapshot: Option<&str>,
    installed: Option<&Installed>,
    force: bool,
) -> Result<(), TooNew> {
    let (Some(snap), Some(inst)) = (snapshot, installed) else {
        return Ok(());
    };
    match (major_minor(snap), major_minor(&inst.version)) {
        (Some(s), Some(i)) if s > i && !force => Err(TooNew {
            snapshot: snap.to_string(),
            installed: inst.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_from_every_place_they_are_found() {
        assert_eq!(major_minor("3.5.9"), Some((3, 5)));
        assert_eq!(major_minor("v3.6.0-rc.1"), Some((3, 6)));
        assert_eq!(major_minor("3"), None);
        assert_eq!(major_minor("latest"), None);
        let yaml = "spec:\n  containers:\n  - name: etcd\n    image: registry.k8s.io/etcd:3.5.12-0\n    command:\n";
        assert_eq!(from_image(yaml).as_deref(), Some("3.5.12"));
        let port = "  - image: \"registry.local:5000/etcd:v3.4.23\"\n";
        assert_eq!(from_image(port).as_deref(), Some("3.4.23"));
        assert_eq!(from_image("  - image: registry.local:5000/etcd\n"), None);
        let pinned = "  - image: registry.k8s.io/etcd:3.5.9-0@sha256:0123abcd\n";
        assert_eq!(from_image(pinned).as_deref(), Some("3.5.9"));
        assert_eq!(from_image("  - image: busybox:1.36\n"), None);
        assert_eq!(from_image("  - image: gcr.io/etcd:latest\n"), None);
        let out = "etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n";
        assert_eq!(from_etcd_version_output(out).as_deref(), Some("3.4.23"));
        assert_eq!(from_etcd_version_output("bash: etcd: not found"), None);
    }

    #[test]
    fn only_a_newer_minor_is_refused_and_force_lets_it_through() {
        let inst = Installed {
            version: "3.4.23".into(),
            from: "etcd --version".into(),
        };
        assert!(check(Some("3.4.30"), Some(&inst), false).is_ok());
        assert!(check(Some("3.3.1"), Some(&inst), false).is_ok());
        let e = check(Some("3.5.0"), Some(&inst), false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("etcd 3.5.0")
                && e.contains("3.5 or newer")
                && e.contains("etcd 3.4.23 is installed (etcd --version)")
                && e.contains("--force-version"),
            "{e}"
        );
        assert!(check(Some("4.0.0"), Some(&inst), false).is_err());
        assert!(check(Some("3.5.0"), Some(&inst), true).is_ok());
        assert!(check(None, Some(&inst), false).is_ok());
        assert!(check(Some("3.5.0"), None, false).is_ok());
        assert!(check(Some("garbage"), Some(&inst), false).is_ok());
    }
}
