//! Archive format v1, reading and writing side by side: `age(zstd(tar))` with `format.json`
//! first and the inner `manifest.json` last, plus the outer manifest stored beside it. This
//! module owns the wire format and the streaming pipelines over it; it must never decide
//! where bytes come from or go (sources and stores are handed in), and it must never write
//! plaintext anywhere but into the next stage of a pipeline or a caller's sink.

pub mod hashing;
pub mod manifest;
pub mod pipe;
pub mod reader;
pub mod tarfmt;
pub mod writer;

use chrono::{DateTime, Utc};
use rand::Rng;

/// `format` value of `format.json`.
pub const ARCHIVE_FORMAT: &str = "cpvault-archive";
/// `format` value of both manifests.
pub const MANIFEST_FORMAT: &str = "cpvault-manifest";
/// The major version this build writes; readers refuse any other major version.
pub const VERSION: u32 = 1;
/// First entry of every archive.
pub const FORMAT_ENTRY: &str = "format.json";
/// Last entry of every archive.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Suffix of archive objects.
pub const ARCHIVE_SUFFIX: &str = ".tar.zst.age";
/// Suffix of outer manifest objects.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// A new backup id: UTC time to the second, then 8 random hex digits, so lexical order is
/// time order and two backups in the same second still differ.
pub fn new_id(now: DateTime<Utc>) -> String {
    let suffix: u32 = rand::rng().random();
    format!("{}-{suffix:08x}", now.format("%Y%m%dT%H%M%SZ"))
}

/// Whether `id` has the shape [`new_id`] produces.
pub fn is_valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    id.len() == 25
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Whether `name` can be a cluster name: it becomes a key prefix in every store, so it is
/// restricted to what every object store and file system accepts unchanged.
pub fn is_valid_cluster(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' || c == b'.'
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// Object key of the archive of `cluster/id`.
pub fn archive_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/{id}{ARCHIVE_SUFFIX}")
}

/// Object key of the outer manifest of `cluster/id`.
pub fn manifest_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/{id}{MANIFEST_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_validate() {
        let a = new_id("2026-01-02T03:04:05Z".parse().unwrap());
        let b = new_id("2026-01-02T03:04:06Z".parse().unwrap());
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20260102T030405Z-"));
        assert!(is_valid_id(&a) && is_valid_id(&b));
        assert!(!is_valid_id("20260102T030405Z-ABCDEF12"));
        assert!(!is_valid_id("latest"));
    }

    #[test]
    fn cluster_names() {
        assert!(is_valid_cluster("admin"));
        assert!(is_valid_cluster("user-1.prod"));
        assert!(!is_valid_cluster("Admin"));
        assert!(!is_valid_cluster("../x"));
        assert!(!is_valid_cluster("a/b"));
        assert!(!is_valid_cluster(""));
    }
}
