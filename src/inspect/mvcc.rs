//! etcd's MVCC records inside its bbolt file, and the live key set they add up to. Bucket
//! `key` maps a revision (8-byte big-endian main revision, `_`, 8-byte big-endian sub
//! revision, and a trailing `t` for a deletion) to a protobuf `mvccpb.KeyValue`
//! `{key=1, create_revision=2, mod_revision=3, version=4, value=5, lease=6}`; bucket `meta`
//! holds `consistent_index` and the compaction revisions. The [`Index`] keeps, per key,
//! only its newest record, so the live set is exact whatever order leaves arrive in, and
//! keeps values only for keys a caller asked for. It never keeps history and never prints.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::bbolt::{BoltError, Visitor};

/// The buckets the reader wants, in the order [`Index`] expects them.
pub const BUCKETS: [&[u8]; 2] = [b"key", b"meta"];

/// The most value bytes kept for `get` at once.
pub const MAX_KEPT_BYTES: usize = 512 << 20;

/// A revision: main (the transaction) and sub (the change within it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Revision {
    /// The transaction's revision.
    pub main: i64,
    /// The change within it.
    pub sub: i64,
}

/// Parses a `key` bucket key: the revision and whether it is a deletion.
///
/// # Errors
/// Not 17 bytes (18 with the tombstone mark), no `_` separator, or a negative revision.
pub fn parse_revision(k: &[u8]) -> Result<(Revision, bool), String> {
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => {
            return Err(format!(
                "a key bucket key of {} bytes is not a revision",
                k.len()
            ))
        }
    };
    if k[8] != b'_' {
        return Err("a key bucket key lacks the '_' of a revision".into());
    }
    let main = i64::from_be_bytes(k[..8].try_into().unwrap_or_default());
    let sub = i64::from_be_bytes(k[9..17].try_into().unwrap_or_default());
    if main < 1 || sub < 0 {
        return Err(format!("revision {main}_{sub} is impossible"));
    }
    Ok((Revision { main, sub }, tombstone))
}

/// The fields of an `mvccpb.KeyValue` that the reader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyValue<'a> {
    /// The user's key.
    pub key: &'a [u8],
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of this change.
    pub mod_revision: i64,
    /// Changes since creation.
    pub version: i64,
    /// The value.
    pub value: &'a [u8],
    /// Lease id, 0 for none.
    pub lease: i64,
}

fn varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&x, rest) = b.split_first().ok_or("a protobuf varint is cut short")?;
        *b = rest;
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a protobuf varint is longer than 10 bytes".into())
}

fn bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let n = varint(b)?;
    let n = usize::try_from(n).ok().filter(|n| *n <= b.len());
    let n = n.ok_or("a protobuf field runs past the record")?;
    let (v, rest) = b.split_at(n);
    *b = rest;
    Ok(v)
}

/// Decodes a protobuf `mvccpb.KeyValue`, skipping fields it does not know.
///
/// # Errors
/// Broken protobuf.
pub fn decode_key_value(mut b: &[u8]) -> Result<KeyValue<'_>, String> {
    let mut kv = KeyValue::default();
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        match (tag >> 3, tag & 7) {
            (1, 2) => kv.key = bytes(&mut b)?,
            (5, 2) => kv.value = bytes(&mut b)?,
            (2, 0) => kv.create_revision = varint(&mut b)? as i64,
            (3, 0) => kv.mod_revision = varint(&mut b)? as i64,
            (4, 0) => kv.version = varint(&mut b)? as i64,
            (6, 0) => kv.lease = varint(&mut b)? as i64,
            (_, 0) => {
                varint(&mut b)?;
            }
            (_, 1) => b = b.get(8..).ok_or("a protobuf fixed64 is cut short")?,
            (_, 2) => {
                bytes(&mut b)?;
            }
            (_, 5) => b = b.get(4..).ok_or("a protobuf fixed32 is cut short")?,
            (f, w) => return Err(format!("protobuf field {f} has wire type {w}")),
        }
    }
    Ok(kv)
}

/// A key's newest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The revision of the newest change.
    pub revision: Revision,
    /// Whether that change deleted the key.
    pub deleted: bool,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Changes since creation.
    pub version: i64,
    /// Lease id, 0 for none.
    pub lease: i64,
    /// Bytes of the value.
    pub size: u64,
    /// The first 16 bytes of the value's sha256, when asked for (to compare backups).
    pub digest: Option<[u8; 16]>,
}

/// Chooses the keys whose values are kept.
pub type Selector = Box<dyn Fn(&[u8]) -> bool + Send>;

/// What the reader keeps besides the index.
#[derive(Default)]
pub struct Wants {
    /// Hash every value (for `diff`).
    pub digests: bool,
    /// Keep the values of the keys this accepts (for `get`).
    pub values: Option<Selector>,
}

/// The newest record of every key, and the `meta` bucket's revisions.
pub struct Index {
    wants: Wants,
    latest: HashMap<Box<[u8]>, Record>,
    values: HashMap<Box<[u8]>, Vec<u8>>,
    kept: usize,
    max_revision: i64,
    records: u64,
    consistent_index: Option<u64>,
    compacted: Option<i64>,
    scheduled: Option<i64>,
}

impl Index {
    /// An empty index.
    pub fn new(wants: Wants) -> Index {
        Index {
            wants,
            latest: HashMap::new(),
            values: HashMap::new(),
            kept: 0,
            max_revision: 0,
            records: 0,
            consistent_index: None,
            compacted: None,
            scheduled: None,
        }
    }

    fn record(&mut self, k: &[u8], v: &[u8]) -> Result<(), BoltError> {
        let corrupt = |e: String| BoltError::Corrupt(format!("bucket `key`: {e}"));
        let (revision, deleted) = parse_revision(k).map_err(corrupt)?;
        let kv = decode_key_value(v).map_err(corrupt)?;
        if kv.key.is_empty() {
            return Err(corrupt(format!(
                "revision {}_{} has no key",
                revision.main, revision.sub
            )));
        }
        self.records += 1;
        self.max_revision = self.max_revision.max(revision.main);
        if self
            .latest
            .get(kv.key)
            .is_some_and(|r| r.revision >= revision)
        {
            return Ok(());
        }
        let digest = (self.wants.digests && !deleted).then(|| {
            let d = Sha256::digest(kv.value);
            let mut out = [0u8; 16];
            out.copy_from_slice(&d[..16]);
            out
        });
        let rec = Record {
            revision,
            deleted,
            create_revision: kv.create_revision,
            version: kv.version,
            lease: kv.lease,
            size: kv.value.len() as u64,
            digest,
        };
        if let Some(keep) = &self.wants.values {
            if keep(kv.key) {
                if let Some(old) = self.values.remove(kv.key) {
                    self.kept -= old.len();
                }
                if !deleted {
                    self.kept += kv.value.len();
                    if self.kept > MAX_KEPT_BYTES {
                        return Err(BoltError::Limit(format!(
                            "the selected values need over {MAX_KEPT_BYTES} bytes of memory; narrow the prefix"
                        )));
                    }
                    self.values.insert(kv.key.into(), kv.value.to_vec());
                }
            }
        }
        match self.latest.get_mut(kv.key) {
            Some(r) => *r = rec,
            None => {
                self.latest.insert(kv.key.into(), rec);
            }
        }
        Ok(())
    }

    fn meta(&mut self, k: &[u8], v: &[u8]) {
        let rev = || parse_revision(v).ok().map(|(r, _)| r.main);
        match k {
            b"consistent_index" => {
                self.consistent_index = v.try_into().ok().map(u64::from_be_bytes);
            }
            b"finishedCompactRev" => self.compacted = rev(),
            b"scheduledCompactRev" => self.scheduled = rev(),
            _ => {}
        }
    }

    /// The snapshot the records add up to.
    pub fn finish(self) -> Snapshot {
        let compacted = self.compacted;
        // etcd's own restore: the newest revision seen, or the compaction revision when
        // compaction removed every record after it; 1 for an empty store.
        let revision = self.max_revision.max(compacted.unwrap_or(0)).max(1);
        let mut keys: Vec<(Vec<u8>, Record)> = self
            .latest
            .into_iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(k, r)| (k.into_vec(), r))
            .collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut values: Vec<(Vec<u8>, Vec<u8>)> = self
            .values
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v))
            .collect();
        values.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Snapshot {
            revision,
            compacted,
            scheduled_compaction: self.scheduled.filter(|s| Some(*s) > compacted),
            consistent_index: self.consistent_index,
            records: self.records,
            keys,
            values,
        }
    }
}

impl Visitor for Index {
    fn visit(&mut self, bucket: usize, key: &[u8], value: &[u8]) -> Result<(), BoltError> {
        match bucket {
            0 => self.record(key, value),
            _ => {
                self.meta(key, value);
                Ok(())
            }
        }
    }
}

/// An etcd snapshot as a client at its revision would see it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The revision etcd serves after restoring it.
    pub revision: i64,
    /// The last finished compaction, if any.
    pub compacted: Option<i64>,
    /// A compaction scheduled but not finished when the snapshot was taken.
    pub scheduled_compaction: Option<i64>,
    /// The raft index the data is at.
    pub consistent_index: Option<u64>,
    /// Records in bucket `key` (all revisions kept, tombstones included).
    pub records: u64,
    /// Live keys, sorted, with their newest record.
    pub keys: Vec<(Vec<u8>, Record)>,
    /// Values of the live keys that were asked for, sorted by key.
    pub values: Vec<(Vec<u8>, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64, sub: i64, tomb: bool) -> Vec<u8> {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&sub.to_be_bytes());
        if tomb {
            k.push(b't');
        }
        k
    }

    fn kv(key: &[u8], value: &[u8], m: u8) -> Vec<u8> {
        let mut b = vec![0x0a, key.len() as u8];
        b.extend_from_slice(key);
        b.extend_from_slice(&[0x18, m]);
        if !value.is_empty() {
            b.extend_from_slice(&[0x2a, value.len() as u8]);
            b.extend_from_slice(value);
        }
        b
    }

    #[test]
    fn newest_record_wins_in_any_order() {
        let mut ix = Index::new(Wants {
            digests: true,
            values: Some(Box::new(|k| k.starts_with(b"/a"))),
        });
        // Arrival order is page order, not revision order.
        ix.visit(0, &rev(5, 0, true), &kv(b"/a/gone", b"", 5))
            .unwrap();
        ix.visit(0, &rev(3, 0, false), &kv(b"/a/gone", b"old", 3))
            .unwrap();
        ix.visit(0, &rev(4, 1, false), &kv(b"/a/x", b"new", 4))
            .unwrap();
        ix.visit(0, &rev(4, 0, false), &kv(b"/a/x", b"older", 4))
            .unwrap();
        ix.visit(0, &rev(2, 0, false), &kv(b"/b", b"v", 2)).unwrap();
        ix.visit(1, b"finishedCompactRev", &rev(9, 0, false))
            .unwrap();
        let s = ix.finish();
        let keys: Vec<&[u8]> = s.keys.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"/a/x"[..], b"/b"]);
        assert_eq!(s.values, vec![(b"/a/x".to_vec(), b"new".to_vec())]);
        assert_eq!((s.revision, s.compacted, s.records), (9, Some(9), 5));
    }

    #[test]
    fn broken_records_are_refused() {
        assert!(parse_revision(b"short").is_err());
        assert!(parse_revision(&rev(0, 0, false)).is_err());
        assert!(decode_key_value(&[0x0a, 0x05, b'a']).is_err());
        assert!(decode_key_value(&[0x80; 11]).is_err());
        let mut ix = Index::new(Wants::default());
        assert!(ix.visit(0, &rev(1, 0, false), &[0x2a, 0x01, b'v']).is_err());
    }
}
