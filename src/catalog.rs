//! What a store holds: committed backups (those with an outer manifest), archives whose
//! upload never committed, and manifests that cannot be read. It only reads the store; a
//! backup without its manifest must never appear as a backup.

use cpvault_backends::{ObjectInfo, Store};

use crate::archive::manifest::{parse_manifest, Manifest};
use crate::archive::{
    is_valid_cluster, is_valid_id, manifest_key, ARCHIVE_SUFFIX, MANIFEST_SUFFIX,
};
use crate::error::Usage;

/// The store's backups.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Committed backups, newest first.
    pub backups: Vec<Manifest>,
    /// Manifests that could not be read: key and why.
    pub unreadable: Vec<(String, String)>,
    /// Archive objects without a manifest (uploads in flight or abandoned).
    pub incomplete: Vec<ObjectInfo>,
    /// Committed backups (`<cluster>/<id>`) whose archive object is missing.
    pub broken: Vec<String>,
}

/// Reads the catalog, of one cluster or all.
///
/// # Errors
/// The store's error when listing fails.
pub async fn load(store: &Store, cluster: Option<&str>) -> anyhow::Result<Catalog> {
    let prefix = cluster.map(|c| format!("{c}/"));
    let objects = store.list(prefix.as_deref()).await?;
    let mut cat = Catalog::default();
    for o in &objects {
        if let Some(stem) = o.key.strip_suffix(MANIFEST_SUFFIX) {
            match store.get_bytes(&o.key).await {
                Ok(bytes) => match parse_manifest(&bytes) {
                    Ok(m) if format!("{}/{}", m.cluster, m.id) == stem && names_own_archive(&m) => {
                        let archive = format!("{stem}{ARCHIVE_SUFFIX}");
                        if !objects.iter().any(|a| a.key == archive) {
                            cat.broken.push(m.reference());
                        }
                        cat.backups.push(m);
                    }
                    Ok(m) => cat.unreadable.push((
                        o.key.clone(),
                        format!("names backup {} (archive {:?}), not its own key — the manifest was edited or moved", m.reference(), m.archive.as_ref().map(|a| &a.key)),
                    )),
                    Err(e) => cat.unreadable.push((o.key.clone(), e)),
                },
                Err(e) => cat.unreadable.push((o.key.clone(), e.to_string())),
            }
        } else if let Some(stem) = o.key.strip_suffix(ARCHIVE_SUFFIX) {
            let committed = objects
                .iter()
                .any(|m| m.key == format!("{stem}{MANIFEST_SUFFIX}"));
            if !committed {
                cat.incomplete.push(o.clone());
            }
        }
    }
    cat.backups
        .sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
    Ok(cat)
}

/// Splits `<cluster>/<id>` (or `<cluster>/latest`).
///
/// # Errors
/// [`Usage`] when the reference is malformed.
pub fn parse_ref(reference: &str) -> Result<(String, String), Usage> {
    let bad = || {
        Usage(format!(
            "backup reference '{reference}' is not <cluster>/<id> (e.g. admin/20261126T120000Z-1a2b3c4d) or <cluster>/latest; run `cpvault list` to see them"
        ))
    };
    let (c, id) = reference.split_once('/').ok_or_else(bad)?;
    if !is_valid_cluster(c) || !(id == "latest" || is_valid_id(id)) {
        return Err(bad());
    }
    Ok((c.to_string(), id.to_string()))
}

/// Loads the outer manifest `reference` names.
///
/// # Errors
/// A malformed reference, a missing backup (with the fix), or an unreadable manifest.
pub async fn resolve(store: &Store, reference: &str) -> anyhow::Result<Manifest> {
    let (cluster, id) = parse_ref(reference)?;
    if id == "latest" {
        let cat = load(store, Some(&cluster)).await?;
        return cat.backups.into_iter().next().ok_or_else(|| {
            anyhow::anyhow!("cluster '{cluster}' has no committed backup in {store}; run `cpvault list` to see what is there")
        });
    }
    let key = manifest_key(&cluster, &id);
    let bytes = match store.get_bytes(&key).await {
        Ok(b) => b,
        Err(cpvault_backends::StoreError::NotFound { .. }) => anyhow::bail!(
            "backup {reference} not found in {store} (no manifest; an archive alone is an incomplete upload); run `cpvault list` to see what is there"
        ),
        Err(e) => return Err(e.into()),
    };
    let m = parse_manifest(&bytes).map_err(|e| {
        crate::error::VerifyFailed(format!("manifest of {reference} is unreadable: {e}"))
    })?;
    if m.cluster != cluster || m.id != id || !names_own_archive(&m) {
        return Err(crate::error::VerifyFailed(format!(
            "manifest at {key} names backup {}, not {reference} (the manifest was edited or moved)",
            m.reference()
        ))
        .into());
    }
    Ok(m)
}

/// Whether the outer manifest points at the archive object of its own backup: the archive
/// key is not trusted from the (unauthenticated) manifest.
fn names_own_archive(m: &Manifest) -> bool {
    m.archive
        .as_ref()
        .is_some_and(|a| a.key == crate::archive::archive_key(&m.cluster, &m.id))
}
