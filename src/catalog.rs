//! What a store holds: committed backups (those with an outer manifest) and who wrote them,
//! archives whose upload never committed, and manifests that cannot be read. It only reads
//! the store, and reads nothing unbounded from it; a backup without its manifest must never
//! appear as a backup, and with allowed signers an untrusted one never counts as usable.

pub mod cache;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use cpvault_backends::{ObjectInfo, Small, Store, StoreError};

use crate::archive::manifest::{parse_manifest, Manifest};
use crate::archive::{
    is_valid_cluster, is_valid_id, manifest_key, ARCHIVE_SUFFIX, MANIFEST_SUFFIX,
};
use crate::error::Usage;
use crate::text::escape_for_line;
use crate::trust::{
    signature_key, AllowedSigners, Authorship, MAX_SIGNATURE_BYTES, SIGNATURE_SUFFIX,
};

/// The store's backups.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Committed backups that may be used, newest first: with allowed signers, the trusted
    /// ones only.
    pub backups: Vec<Manifest>,
    /// With allowed signers: committed backups that are not trusted, newest first, and why.
    pub untrusted: Vec<(Manifest, String)>,
    /// Who wrote each committed backup (trusted or not), by `<cluster>/<id>`.
    pub authorship: BTreeMap<String, Authorship>,
    /// Manifests that could not be read: key and why.
    pub unreadable: Vec<(String, String)>,
    /// Archive and signature objects without a manifest (uploads in flight or abandoned).
    pub incomplete: Vec<ObjectInfo>,
    /// Committed backups (`<cluster>/<id>`) whose archive object is missing.
    pub broken: Vec<String>,
}

/// Largest outer manifest read: real ones are a few KiB; a hostile store must not make a
/// listing hold hundreds of megabytes.
pub const MAX_MANIFEST_BYTES: u64 = crate::archive::manifest::MAX_MANIFEST_BYTES;

/// Reads the catalog, of one cluster or all, without checking authorship.
///
/// # Errors
/// The store's error when listing fails.
pub async fn load(store: &Store, cluster: Option<&str>) -> anyhow::Result<Catalog> {
    load_with(store, cluster, None).await
}

/// Reads the catalog, of one cluster or all; with `signers`, only trusted backups are in
/// [`Catalog::backups`] and the others in [`Catalog::untrusted`]. Every manifest is read from
/// the store: for commands that decide or act on what they find (verify, prune, drill, copy).
///
/// # Errors
/// The store's error when listing fails.
pub async fn load_with(
    store: &Store,
    cluster: Option<&str>,
    signers: Option<&AllowedSigners>,
) -> anyhow::Result<Catalog> {
    load_from(store, cluster, signers, false).await
}

/// [`load_with`] through the clusters' listing caches (see [`cache`]): for commands that only
/// show what is there (`list`, `status`). What they show is judged exactly as with
/// [`load_with`], from bytes the cache holds for an object the store lists unchanged.
///
/// # Errors
/// The store's error when listing fails.
pub async fn load_cached(
    store: &Store,
    cluster: Option<&str>,
    signers: Option<&AllowedSigners>,
) -> anyhow::Result<Catalog> {
    load_from(store, cluster, signers, true).await
}

async fn load_from(
    store: &Store,
    cluster: Option<&str>,
    signers: Option<&AllowedSigners>,
    cached: bool,
) -> anyhow::Result<Catalog> {
    let prefix = cluster.map(|c| format!("{c}/"));
    let objects = store.list(prefix.as_deref()).await?;
    Ok(from_listing(store, &objects, signers, cached).await)
}

/// The catalog of what `objects` (a listing of `store`) holds, its manifests read through the
/// listing caches when `cached` (see [`load_cached`]) and from the store otherwise.
pub async fn from_listing(
    store: &Store,
    objects: &[ObjectInfo],
    signers: Option<&AllowedSigners>,
    cached: bool,
) -> Catalog {
    use futures::StreamExt;
    let listed: HashMap<&str, &ObjectInfo> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let mut cat = Catalog::default();
    let mut manifests = vec![];
    for o in objects {
        if let Some(stem) = o.key.strip_suffix(MANIFEST_SUFFIX) {
            manifests.push((o, stem));
        } else if let Some(stem) = o
            .key
            .strip_suffix(ARCHIVE_SUFFIX)
            .or_else(|| o.key.strip_suffix(SIGNATURE_SUFFIX))
        {
            // An archive or signature without its manifest: a commit that never happened.
            if !listed.contains_key(format!("{stem}{MANIFEST_SUFFIX}").as_str()) {
                cat.incomplete.push(o.clone());
            }
        }
    }
    // One request per manifest (and per signature, when signers judge them), many in flight:
    // on a cloud store each is a round trip, and a fleet has tens of thousands. What a
    // cluster's listing cache holds unchanged is not fetched again.
    let cache = if cached {
        cache::load(store, objects).await
    } else {
        cache::Cache::default()
    };
    let cache = &cache;
    let judged: Vec<_> = futures::stream::iter(manifests)
        .map(|(o, stem)| {
            let signature = listed
                .get(format!("{stem}{SIGNATURE_SUFFIX}").as_str())
                .copied();
            let archived = listed.contains_key(format!("{stem}{ARCHIVE_SUFFIX}").as_str());
            async move {
                let read = Reader { store, cache };
                (o, judge(read, o, stem, signature, signers).await, archived)
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    for (o, judged, archived) in judged {
        match judged {
            Ok((m, who)) => {
                if !archived {
                    cat.broken.push(m.reference());
                }
                cat.authorship.insert(m.reference(), who.clone());
                match who {
                    Authorship::Untrusted { reason } => cat.untrusted.push((m, reason)),
                    _ => cat.backups.push(m),
                }
            }
            Err(e) => cat.unreadable.push((o.key.clone(), e)),
        }
    }
    cat.broken.sort();
    cat.unreadable.sort();
    cat.backups
        .sort_by(|a, b| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
    cat.untrusted
        .sort_by(|(a, _), (b, _)| (&b.created, &b.id).cmp(&(&a.created, &a.id)));
    cat
}

/// Manifest (and signature) reads in flight at once while listing: enough to hide a cloud
/// store's round trips, few enough to stay far below its request limits.
const READ_CONCURRENCY: usize = 64;

/// Where a listing's manifests and signatures come from: the cluster's listing cache when it
/// holds the object as listed, the store otherwise.
#[derive(Clone, Copy)]
struct Reader<'a> {
    store: &'a Store,
    cache: &'a cache::Cache,
}

impl Reader<'_> {
    async fn read(&self, o: &ObjectInfo, limit: u64) -> Result<Option<Bytes>, String> {
        match self.cache.get(o) {
            Some(bytes) => Ok(Some(bytes)),
            None => read_small(self.store, &o.key, limit).await,
        }
    }
}

/// Reads the manifest `o` (whose key is `stem` + the manifest suffix) and judges who wrote
/// it: the signature (listed as `signature`) is read only when `signers` will check it.
async fn judge(
    read: Reader<'_>,
    o: &ObjectInfo,
    stem: &str,
    signature: Option<&ObjectInfo>,
    signers: Option<&AllowedSigners>,
) -> Result<(Manifest, Authorship), String> {
    if o.size > MAX_MANIFEST_BYTES {
        return Err(format!(
            "{} bytes, over the {MAX_MANIFEST_BYTES}-byte limit; not read (manifest)",
            o.size
        ));
    }
    let bytes = read
        .read(o, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| format!("{e} (manifest)"))?
        .ok_or_else(|| "it vanished while listing".to_string())?;
    let m = parse_manifest(&bytes)?;
    if format!("{}/{}", m.cluster, m.id) != stem || !names_own_archive(&m) {
        return Err(format!(
            "names backup {} (archive {:?}), not its own key — the manifest was edited or moved",
            escape_for_line(&m.reference(), 200),
            m.archive.as_ref().map(|a| escape_for_line(&a.key, 200))
        ));
    }
    // Without allowed signers nothing is checked, so the signature is not read.
    let who = match (signers, signature) {
        (None, signature) => Authorship::NotChecked {
            signed: signature.is_some(),
        },
        (Some(_), None) => Authorship::judge(&bytes, None, signers),
        (Some(_), Some(s)) => match read.read(s, MAX_SIGNATURE_BYTES).await {
            Ok(sig) => Authorship::judge(&bytes, sig.as_deref(), signers),
            Err(e) => Authorship::Untrusted {
                reason: format!("signature rejected: {e}"),
            },
        },
    };
    Ok((m, who))
}

/// Reads a small object of the store in one request, refusing it unread when the store
/// announces more than `limit` bytes (and stopping if it streams more); `Ok(None)` when the
/// object does not exist. The one bounded read for manifests and signatures.
///
/// # Errors
/// Over the limit, or the store's error, as a sentence.
pub async fn read_small(store: &Store, key: &str, limit: u64) -> Result<Option<Bytes>, String> {
    match store.get_small(key, limit).await {
        Ok(Small::Bytes(b)) => Ok(Some(b)),
        Ok(Small::TooLarge(n)) => Err(format!("{n} bytes, over the {limit}-byte limit; not read")),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads and parses a manifest; `Ok(None)` when there is none.
async fn read_manifest(store: &Store, key: &str) -> Result<Option<(Bytes, Manifest)>, String> {
    let Some(bytes) = read_small(store, key, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| format!("{e} (manifest)"))?
    else {
        return Ok(None);
    };
    let m = parse_manifest(&bytes)?;
    Ok(Some((bytes, m)))
}

/// Reads a signature object, bounded; `Ok(None)` when there is none.
///
/// # Errors
/// Why it cannot be used, as a sentence starting with "signature".
pub async fn read_signature(store: &Store, key: &str) -> Result<Option<Bytes>, String> {
    read_small(store, key, MAX_SIGNATURE_BYTES)
        .await
        .map_err(|e| format!("signature rejected: {e}"))
}

/// Whether `key` is the staging file of an upload of one of cpvault's own objects that was
/// killed midway in a local store (`<cluster>/<id>.<suffix>#<n>`, or the cluster's listing
/// cache), of `cluster` when given.
/// Anything else with a `#` in its name is someone else's file and never prune's business.
pub fn is_upload_leftover(key: &str, cluster: Option<&str>) -> bool {
    let Some((object, n)) = key.rsplit_once('#') else {
        return false;
    };
    let Some((c, name)) = object.split_once('/') else {
        return false;
    };
    let id = [ARCHIVE_SUFFIX, MANIFEST_SUFFIX, SIGNATURE_SUFFIX]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix));
    !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && is_valid_cluster(c)
        && cluster.is_none_or(|want| want == c)
        && (id.is_some_and(is_valid_id) || name == cache::CACHE_NAME)
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

/// Loads the outer manifest `reference` names, without checking authorship.
///
/// # Errors
/// As [`resolve_with`].
pub async fn resolve(store: &Store, reference: &str) -> anyhow::Result<Manifest> {
    Ok(resolve_with(store, reference, None).await?.0)
}

/// Why a reference does not lead to a backup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No committed backup has that name (or the cluster has none, for `latest`).
    #[error("{0}")]
    Missing(String),
}

/// Loads the outer manifest `reference` names and judges its authorship under `signers`.
/// `<cluster>/latest` is the newest usable backup: with `signers`, the newest trusted one.
/// An untrusted backup named by id is returned with its verdict; callers refuse it.
///
/// # Errors
/// A malformed reference ([`Usage`]), a missing backup ([`ResolveError::Missing`]), or an
/// unreadable or misplaced manifest ([`crate::error::VerifyFailed`]).
pub async fn resolve_with(
    store: &Store,
    reference: &str,
    signers: Option<&AllowedSigners>,
) -> anyhow::Result<(Manifest, Authorship)> {
    let (cluster, id) = parse_ref(reference)?;
    if id != "latest" {
        return resolve_id(store, &cluster, &id, signers).await;
    }
    // `latest` is chosen for a command that acts on it, so from the manifests in the store
    // (not the listing caches).
    newest(
        load_with(store, Some(&cluster), signers).await?,
        &cluster,
        store,
    )
}

/// The newest usable backup of `cluster` in `cat`.
fn newest(
    mut cat: Catalog,
    cluster: &str,
    store: &Store,
) -> anyhow::Result<(Manifest, Authorship)> {
    let skipped = cat.untrusted.len();
    if cat.backups.is_empty() {
        let why = if skipped > 0 {
            format!("cluster '{cluster}' has no trusted backup in {store} ({skipped} untrusted ones skipped; see `cpvault list --allowed-signers …`)")
        } else {
            format!("cluster '{cluster}' has no committed backup in {store}; run `cpvault list` to see what is there")
        };
        return Err(ResolveError::Missing(why).into());
    }
    let m = cat.backups.remove(0);
    let who = cat
        .authorship
        .remove(&m.reference())
        .unwrap_or(Authorship::NotChecked { signed: false });
    Ok((m, who))
}

/// Loads and judges the backup `<cluster>/<id>` from its manifest in the store.
async fn resolve_id(
    store: &Store,
    cluster: &str,
    id: &str,
    signers: Option<&AllowedSigners>,
) -> anyhow::Result<(Manifest, Authorship)> {
    let reference = format!("{cluster}/{id}");
    let key = manifest_key(cluster, id);
    let (bytes, m) = read_manifest(store, &key)
        .await
        .map_err(|e| {
            crate::error::VerifyFailed(format!("manifest of {reference} is unreadable: {e}"))
        })?
        .ok_or_else(|| {
            ResolveError::Missing(format!(
                "backup {reference} not found in {store} (no manifest; an archive alone is an incomplete upload); run `cpvault list` to see what is there"
            ))
        })?;
    if m.cluster != cluster || m.id != id || !names_own_archive(&m) {
        return Err(crate::error::VerifyFailed(format!(
            "manifest at {key} names backup {}, not {reference} (the manifest was edited or moved)",
            escape_for_line(&m.reference(), 200)
        ))
        .into());
    }
    let sig_key = signature_key(cluster, id);
    let who = match read_signature(store, &sig_key).await {
        Ok(sig) => Authorship::judge(&bytes, sig.as_deref(), signers),
        Err(reason) if signers.is_some() => Authorship::Untrusted { reason },
        Err(_) => Authorship::NotChecked { signed: true },
    };
    Ok((m, who))
}

/// Whether the outer manifest points at the archive object of its own backup: the archive
/// key is not trusted from the (unauthenticated) manifest.
fn names_own_archive(m: &Manifest) -> bool {
    m.archive
        .as_ref()
        .is_some_and(|a| a.key == crate::archive::archive_key(&m.cluster, &m.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    // prune deleted any file with '#' in its name under the store root.
    #[test]
    fn only_our_own_staging_files_are_upload_leftovers() {
        let ours = "admin/20200101T000000Z-deadbeef.tar.zst.age#3";
        assert!(is_upload_leftover(ours, None));
        assert!(is_upload_leftover(ours, Some("admin")));
        assert!(!is_upload_leftover(ours, Some("user1")));
        assert!(is_upload_leftover(
            "admin/20200101T000000Z-deadbeef.manifest.json#12",
            None
        ));
        assert!(is_upload_leftover("admin/listing-cache.json.zst#7", None));
        for other in [
            "team-notes/runbook#v2.md",
            "notes#v2.md",
            "admin/notes#2",
            "admin/20200101T000000Z-deadbeef.tar.zst.age#",
            "admin/20200101T000000Z-deadbeef.tar.zst.age#x1",
            "admin/sub/20200101T000000Z-deadbeef.tar.zst.age#1",
            "Admin/20200101T000000Z-deadbeef.tar.zst.age#1",
        ] {
            assert!(!is_upload_leftover(other, None), "{other}");
        }
    }
}
