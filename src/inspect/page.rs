//! bbolt's on-disk page format, parsed from byte slices: the page header, the meta page, and
//! the elements of branch and leaf pages (with inline buckets). Pure functions over bytes
//! that came from a backup, so every offset and length is checked before it is used: a
//! corrupt or hostile page is an error, never a panic or an allocation larger than the page.
//!
//! Layout (go.etcd.io/bbolt, little-endian): a page starts with a 16-byte header
//! `{id u64, flags u16, count u16, overflow u32}` and spans `1 + overflow` blocks of the
//! page size. A meta page holds `{magic u32, version u32, pageSize u32, flags u32,
//! root {pgid u64, sequence u64}, freelist u64, pgid u64, txid u64, checksum u64}`, the
//! checksum being FNV-1a 64 over the fields before it. Branch elements are
//! `{pos u32, ksize u32, pgid u64}`, leaf elements `{flags u32, pos u32, ksize u32, vsize u32}`,
//! `pos` counting from the element itself. A leaf element with flag 0x01 is a bucket whose
//! value is `{root pgid u64, sequence u64}`, followed, when `root` is 0, by an inline page.

/// Bytes of a page header.
pub const HEADER: usize = 16;
/// Bytes of a branch or leaf element header.
const ELEMENT: usize = 16;
/// Page flags.
pub const BRANCH: u16 = 0x01;
/// A leaf page.
pub const LEAF: u16 = 0x02;
/// A meta page.
pub const META: u16 = 0x04;
/// A leaf element that is a bucket.
pub const BUCKET_ELEMENT: u32 = 0x01;
/// bbolt's magic number.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only data format version bbolt writes.
pub const VERSION: u32 = 2;
/// Bytes of the meta page up to and including its checksum.
pub const META_END: usize = HEADER + 64;
/// Smallest and largest page sizes accepted (bbolt uses the OS page size: 4 KiB to 64 KiB).
pub const MIN_PAGE_SIZE: u32 = 512;
/// See [`MIN_PAGE_SIZE`].
pub const MAX_PAGE_SIZE: u32 = 1 << 20;

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page {page}: {why}")]
pub struct PageError {
    /// The page id (its position in the file), 0 for an inline page.
    pub page: u64,
    /// What is wrong with it.
    pub why: String,
}

fn err(page: u64, why: impl Into<String>) -> PageError {
    PageError {
        page,
        why: why.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The page id bbolt wrote into the page (equal to its position for a real page).
    pub id: u64,
    /// BRANCH, LEAF, META or freelist.
    pub flags: u16,
    /// Number of elements.
    pub count: u16,
    /// Further blocks the page spans.
    pub overflow: u32,
}

impl Header {
    /// The header at the start of `b`, `None` when `b` is shorter than a header.
    pub fn parse(b: &[u8]) -> Option<Header> {
        Some(Header {
            id: u64_at(b, 0)?,
            flags: u16_at(b, 8)?,
            count: u16_at(b, 10)?,
            overflow: u32_at(b, 12)?,
        })
    }
}

/// A meta page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Bytes per page.
    pub page_size: u32,
    /// Root page of the root bucket.
    pub root: u64,
    /// The high-water mark: pages at or past it are not part of the database.
    pub pgid: u64,
    /// The transaction that wrote it.
    pub txid: u64,
}

pub(super) fn fnv1a64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The page size a meta page claims, checked only for magic, version and a sane size: the
/// reader needs it to find the second meta page even when this one's checksum fails.
pub fn claimed_page_size(b: &[u8]) -> Option<u32> {
    let h = Header::parse(b)?;
    let ok =
        h.flags & META != 0 && u32_at(b, HEADER)? == MAGIC && u32_at(b, HEADER + 4)? == VERSION;
    let size = u32_at(b, HEADER + 8)?;
    (ok && size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&size))
        .then_some(size)
}

/// The meta page at the start of `b` (page `page`).
///
/// # Errors
/// Not a meta page, a wrong magic or version, a failed checksum, or impossible values.
pub fn parse_meta(b: &[u8], page: u64) -> Result<Meta, PageError> {
    let h = Header::parse(b).ok_or_else(|| err(page, "shorter than a page header"))?;
    if h.flags & META == 0 {
        return Err(err(page, format!("not a meta page (flags {:#x})", h.flags)));
    }
    if b.len() < META_END {
        return Err(err(page, "meta page cut short"));
    }
    let magic = u32_at(b, HEADER).unwrap_or_default();
    if magic != MAGIC {
        return Err(err(page, format!("magic {magic:#x} is not bbolt's")));
    }
    let version = u32_at(b, HEADER + 4).unwrap_or_default();
    if version != VERSION {
        return Err(err(page, format!("bbolt format version {version}, not 2")));
    }
    let stored = u64_at(b, HEADER + 56).unwrap_or_default();
    if fnv1a64(&b[HEADER..HEADER + 56]) != stored {
        return Err(err(page, "meta checksum does not match"));
    }
    let m = Meta {
        page_size: u32_at(b, HEADER + 8).unwrap_or_default(),
        root: u64_at(b, HEADER + 16).unwrap_or_default(),
        pgid: u64_at(b, HEADER + 40).unwrap_or_default(),
        txid: u64_at(b, HEADER + 48).unwrap_or_default(),
    };
    if !m.page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&m.page_size) {
        return Err(err(
            page,
            format!("page size {} is impossible", m.page_size),
        ));
    }
    if m.root < 2 || m.root >= m.pgid {
        return Err(err(
            page,
            format!("root page {} outside the file's {} pages", m.root, m.pgid),
        ));
    }
    Ok(m)
}

/// The child page ids of the branch page `b` (the whole page, all its blocks).
///
/// # Errors
/// Not a branch page, or elements that do not fit in it.
pub fn branch_children(b: &[u8], page: u64) -> Result<Vec<u64>, PageError> {
    let h = Header::parse(b).ok_or_else(|| err(page, "shorter than a page header"))?;
    if h.flags != BRANCH {
        return Err(err(
            page,
            format!("not a branch page (flags {:#x})", h.flags),
        ));
    }
    let count = usize::from(h.count);
    if count == 0 {
        return Err(err(page, "branch page without elements"));
    }
    if HEADER + count * ELEMENT > b.len() {
        return Err(err(
            page,
            format!("{count} elements do not fit in the page"),
        ));
    }
    (0..count)
        .map(|i| {
            let at = HEADER + i * ELEMENT;
            let pos = u32_at(b, at).unwrap_or_default() as usize;
            let ksize = u32_at(b, at + 4).unwrap_or_default() as usize;
            // The key itself is not needed, but a key outside the page means a broken page.
            let end = at.checked_add(pos).and_then(|s| s.checked_add(ksize));
            if end.is_none_or(|e| e > b.len()) {
                return Err(err(
                    page,
                    format!("element {i}'s key lies outside the page"),
                ));
            }
            Ok(u64_at(b, at + 8).unwrap_or_default())
        })
        .collect()
}

/// One element of a leaf page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafElement<'a> {
    /// `BUCKET_ELEMENT` for a bucket.
    pub flags: u32,
    /// Key.
    pub key: &'a [u8],
    /// Value (for a bucket, its header and any inline page).
    pub value: &'a [u8],
}

/// The elements of the leaf page `b` (the whole page, all its blocks; or an inline page).
///
/// # Errors
/// Not a leaf page, or elements that do not fit in it.
pub fn leaf_elements(b: &[u8], page: u64) -> Result<Vec<LeafElement<'_>>, PageError> {
    let h = Header::parse(b).ok_or_else(|| err(page, "shorter than a page header"))?;
    if h.flags != LEAF {
        return Err(err(page, format!("not a leaf page (flags {:#x})", h.flags)));
    }
    let count = usize::from(h.count);
    if HEADER + count * ELEMENT > b.len() {
        return Err(err(
            page,
            format!("{count} elements do not fit in the page"),
        ));
    }
    (0..count)
        .map(|i| {
            let at = HEADER + i * ELEMENT;
            let flags = u32_at(b, at).unwrap_or_default();
            let pos = u32_at(b, at + 4).unwrap_or_default() as usize;
            let ksize = u32_at(b, at + 8).unwrap_or_default() as usize;
            let vsize = u32_at(b, at + 12).unwrap_or_default() as usize;
            let key_at = at.checked_add(pos);
            let value_at = key_at.and_then(|k| k.checked_add(ksize));
            let end = value_at.and_then(|v| v.checked_add(vsize));
            match (key_at, value_at, end) {
                (Some(k), Some(v), Some(e)) if e <= b.len() => Ok(LeafElement {
                    flags,
                    key: &b[k..v],
                    value: &b[v..e],
                }),
                _ => Err(err(page, format!("element {i} lies outside the page"))),
            }
        })
        .collect()
}

/// Where a bucket's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketRoot<'a> {
    /// In the page tree rooted at this page.
    Page(u64),
    /// In this inline page, inside its parent's leaf.
    Inline(&'a [u8]),
}

/// Where the bucket whose leaf value is `v` keeps its data.
///
/// # Errors
/// A value too short to be a bucket header, or an inline bucket without its page.
pub fn bucket_root(v: &[u8], page: u64) -> Result<BucketRoot<'_>, PageError> {
    let root = u64_at(v, 0).ok_or_else(|| err(page, "bucket header cut short"))?;
    if root != 0 {
        return Ok(BucketRoot::Page(root));
    }
    let inline = &v[16.min(v.len())..];
    if inline.len() < HEADER {
        return Err(err(page, "inline bucket without its page"));
    }
    Ok(BucketRoot::Inline(inline))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_page(page_size: u32, root: u64, pgid: u64) -> Vec<u8> {
        let mut b = vec![0u8; META_END];
        b[8..10].copy_from_slice(&META.to_le_bytes());
        b[16..20].copy_from_slice(&MAGIC.to_le_bytes());
        b[20..24].copy_from_slice(&VERSION.to_le_bytes());
        b[24..28].copy_from_slice(&page_size.to_le_bytes());
        b[32..40].copy_from_slice(&root.to_le_bytes());
        b[56..64].copy_from_slice(&pgid.to_le_bytes());
        let sum = fnv1a64(&b[16..72]);
        b[72..80].copy_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn meta_checksum_and_bounds_are_checked() {
        let good = meta_page(4096, 3, 10);
        assert_eq!(parse_meta(&good, 0).unwrap().root, 3);
        assert_eq!(claimed_page_size(&good), Some(4096));
        let mut flipped = good.clone();
        flipped[33] ^= 1;
        assert!(parse_meta(&flipped, 0)
            .unwrap_err()
            .why
            .contains("checksum"));
        assert!(parse_meta(&meta_page(4096, 10, 10), 0).is_err());
        assert!(parse_meta(&meta_page(1000, 3, 10), 0).is_err());
        assert!(parse_meta(&good[..40], 0).is_err());
    }

    #[test]
    fn leaf_elements_outside_the_page_are_refused() {
        let mut b = vec![0u8; 64];
        b[8..10].copy_from_slice(&LEAF.to_le_bytes());
        b[10..12].copy_from_slice(&1u16.to_le_bytes());
        // One element: pos 16 from itself (= byte 32), key 3 bytes, value 2 bytes.
        b[20..24].copy_from_slice(&16u32.to_le_bytes());
        b[24..28].copy_from_slice(&3u32.to_le_bytes());
        b[28..32].copy_from_slice(&2u32.to_le_bytes());
        b[32..37].copy_from_slice(b"keyvv");
        let e = leaf_elements(&b, 5).unwrap();
        assert_eq!((e[0].key, e[0].value), (&b"key"[..], &b"vv"[..]));
        b[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(leaf_elements(&b, 5).is_err());
        b[10..12].copy_from_slice(&1000u16.to_le_bytes());
        assert!(leaf_elements(&b, 5).is_err());
    }

    #[test]
    fn branch_pages_need_elements_inside_them() {
        let mut b = vec![0u8; 48];
        b[8..10].copy_from_slice(&BRANCH.to_le_bytes());
        b[10..12].copy_from_slice(&1u16.to_le_bytes());
        b[16..20].copy_from_slice(&16u32.to_le_bytes());
        b[20..24].copy_from_slice(&4u32.to_le_bytes());
        b[24..32].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(branch_children(&b, 2).unwrap(), vec![7]);
        b[20..24].copy_from_slice(&400u32.to_le_bytes());
        assert!(branch_children(&b, 2).is_err());
    }
}
