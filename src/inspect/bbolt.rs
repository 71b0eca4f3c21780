//! Reading a bbolt file as a stream, in two passes, with memory bounded by the page tree
//! rather than the file. Pages arrive in file order while the B+tree points anywhere, and a
//! freed page still looks like a page, so one pass cannot tell live data from stale data.
//! The first pass ([`TreeScan`]) keeps only what the tree is made of: the meta pages, the
//! child lists of every branch page, and the leaves that hold buckets. Walking that from the
//! meta's root names exactly the leaf pages of the wanted buckets; the second pass
//! ([`LeafScan`]) hands their elements to a visitor as they stream past. Every reachable page
//! must be found where the tree says it is, with the kind it should have; anything else is a
//! [`BoltError`], never a guess, a panic or an allocation past the limits below.

use std::collections::{HashMap, HashSet};

use super::page::{self, BucketRoot, Header, Meta, PageError};

/// The largest page (with its overflow blocks) either pass will hold: a page this size holds
/// a value far over etcd's request limit (1.5 MiB by default).
pub const MAX_PAGE_BYTES: usize = 64 << 20;
/// The most memory the first pass spends on the tree (branch children, bucket leaves and
/// pages being assembled): for a 4 KiB page size this is ample for a 100 GiB file.
pub const MAX_TREE_BYTES: usize = 256 << 20;
/// Most multi-page tree pages gathered at once by the first pass.
const MAX_OPEN_PAGES: usize = 256;
/// Deepest page tree followed.
const MAX_DEPTH: usize = 64;

/// Why a snapshot's page tree could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoltError {
    /// The file does not start with a usable bbolt meta page.
    #[error("not a bbolt database: {0}")]
    NotBbolt(String),
    /// A page of the tree is broken or missing.
    #[error("the page tree is corrupt: {0}")]
    Corrupt(String),
    /// A limit protecting memory was reached.
    #[error("{0}")]
    Limit(String),
}

impl From<PageError> for BoltError {
    fn from(e: PageError) -> Self {
        BoltError::Corrupt(e.to_string())
    }
}

/// Cuts a byte stream into page-size blocks: the page size comes from the first meta page.
#[derive(Default)]
struct Blocks {
    page_size: usize,
    cur: Vec<u8>,
    next: u64,
}

impl Blocks {
    fn push(
        &mut self,
        mut data: &[u8],
        f: &mut impl FnMut(u64, &[u8]) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        while !data.is_empty() {
            if self.page_size == 0 {
                let want = page::META_END - self.cur.len();
                let n = want.min(data.len());
                self.cur.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.cur.len() < page::META_END {
                    return Ok(());
                }
                let size = page::claimed_page_size(&self.cur)
                    .ok_or_else(|| BoltError::NotBbolt("page 0 is not a bbolt meta page".into()))?;
                self.page_size = size as usize;
                continue;
            }
            if self.cur.is_empty() && data.len() >= self.page_size {
                let (block, rest) = data.split_at(self.page_size);
                f(self.next, block)?;
                self.next += 1;
                data = rest;
                continue;
            }
            let n = (self.page_size - self.cur.len()).min(data.len());
            self.cur.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.cur.len() == self.page_size {
                let block = std::mem::take(&mut self.cur);
                f(self.next, &block)?;
                self.next += 1;
                self.cur = block;
                self.cur.clear();
            }
        }
        Ok(())
    }
}

/// A page whose blocks are being gathered.
struct Gathering {
    id: u64,
    buf: Vec<u8>,
    want: usize,
}

/// Gathers the blocks of multi-block pages; a page is handed back once whole.
#[derive(Default)]
struct Spans {
    open: Vec<Gathering>,
}

impl Spans {
    fn bytes(&self) -> usize {
        self.open.iter().map(|g| g.buf.len()).sum()
    }

    /// Appends `block` to every open page; returns the pages now complete.
    fn feed(&mut self, block: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut done = vec![];
        for g in &mut self.open {
            let n = (g.want - g.buf.len()).min(block.len());
            g.buf.extend_from_slice(&block[..n]);
        }
        self.open.retain_mut(|g| {
            if g.buf.len() == g.want {
                done.push((g.id, std::mem::take(&mut g.buf)));
                false
            } else {
                true
            }
        });
        done
    }
}

/// The bytes a page at `id` with header `h` spans, if it may be held.
fn span(h: &Header, id: u64, page_size: usize, hwm: u64) -> Result<usize, String> {
    let blocks = u64::from(h.overflow) + 1;
    if id.checked_add(blocks).is_none_or(|end| end > hwm) {
        return Err(format!(
            "page {id} spans {blocks} pages, past the file's {hwm}"
        ));
    }
    let bytes = blocks as usize * page_size;
    if bytes > MAX_PAGE_BYTES {
        return Err(format!(
            "page {id} spans {bytes} bytes, over the {MAX_PAGE_BYTES}-byte limit of one page"
        ));
    }
    Ok(bytes)
}

/// The first pass: the tree's shape.
#[derive(Default)]
pub struct TreeScan {
    blocks: Blocks,
    metas: Vec<Result<Meta, PageError>>,
    hwm: u64,
    spans: Spans,
    branches: HashMap<u64, Vec<u64>>,
    bucket_leaves: HashMap<u64, Vec<u8>>,
    kept: usize,
}

impl TreeScan {
    /// A scan at the start of the file.
    pub fn new() -> TreeScan {
        TreeScan::default()
    }

    /// Reads the next bytes of the file.
    ///
    /// # Errors
    /// A file that is not bbolt, or a tree past [`MAX_TREE_BYTES`].
    pub fn push(&mut self, data: &[u8]) -> Result<(), BoltError> {
        let mut blocks = std::mem::take(&mut self.blocks);
        let r = blocks.push(data, &mut |id, block| self.block(id, block));
        self.blocks = blocks;
        r
    }

    fn block(&mut self, id: u64, block: &[u8]) -> Result<(), BoltError> {
        if id < 2 {
            self.metas.push(page::parse_meta(block, id));
            if id == 1 {
                let best = self
                    .metas
                    .iter()
                    .filter_map(|m| m.as_ref().ok())
                    .max_by_key(|m| m.txid)
                    .copied();
                match best {
                    Some(m) if m.page_size as usize == block.len() => self.hwm = m.pgid,
                    Some(m) => {
                        return Err(BoltError::NotBbolt(format!(
                            "the meta pages disagree on the page size ({} and {})",
                            block.len(),
                            m.page_size
                        )))
                    }
                    None => {
                        let why: Vec<String> = self
                            .metas
                            .iter()
                            .filter_map(|m| m.as_ref().err().map(|e| e.to_string()))
                            .collect();
                        return Err(BoltError::NotBbolt(why.join("; ")));
                    }
                }
            }
            return Ok(());
        }
        if id >= self.hwm {
            // Past the high-water mark: preallocated space or etcd's sha256 trailer.
            return Ok(());
        }
        for (pid, bytes) in self.spans.feed(block) {
            self.keep(pid, &bytes);
        }
        self.candidate(id, block)?;
        // Checked on every block: open pages grow with each one.
        let used = self.kept + self.spans.bytes();
        if used > MAX_TREE_BYTES {
            return Err(BoltError::Limit(format!(
                "the page tree needs over {MAX_TREE_BYTES} bytes of memory; this is not an etcd snapshot cpvault can read"
            )));
        }
        Ok(())
    }

    /// Keeps (or starts gathering) the page at `id` when it may belong to the tree.
    fn candidate(&mut self, id: u64, block: &[u8]) -> Result<(), BoltError> {
        let Some(h) = Header::parse(block) else {
            return Ok(());
        };
        // Every real page carries its own id; a block inside another page's overflow almost
        // never does, and if it does, nothing reachable points at it.
        if h.id != id || !(h.flags == page::BRANCH || (h.flags == page::LEAF && has_bucket(block)))
        {
            return Ok(());
        }
        let Ok(bytes) = span(&h, id, block.len(), self.hwm) else {
            return Ok(());
        };
        if bytes == block.len() {
            self.keep(id, block);
        } else {
            // Each open page is fed every block: their number bounds the work per block.
            if self.spans.open.len() >= MAX_OPEN_PAGES {
                return Err(BoltError::Limit(format!(
                    "over {MAX_OPEN_PAGES} multi-page tree pages overlap at page {id}; this is not an etcd snapshot cpvault can read"
                )));
            }
            // Grown as blocks arrive, not reserved: a header may claim more than the file holds.
            let buf = block.to_vec();
            self.spans.open.push(Gathering {
                id,
                buf,
                want: bytes,
            });
        }
        Ok(())
    }

    fn keep(&mut self, id: u64, bytes: &[u8]) {
        match Header::parse(bytes).map(|h| h.flags) {
            Some(page::BRANCH) => {
                // A block that only looks like a branch page is dropped: never reachable.
                if let Ok(children) = page::branch_children(bytes, id) {
                    self.kept += children.len() * 8 + 64;
                    self.branches.insert(id, children);
                }
            }
            _ => {
                self.kept += bytes.len() + 64;
                self.bucket_leaves.insert(id, bytes.to_vec());
            }
        }
    }

    /// Ends the first pass: finds the buckets named in `wanted` below the root bucket.
    ///
    /// # Errors
    /// A truncated file, a broken tree, or a wanted bucket that is not there (`None` in its
    /// place is returned instead when `wanted` marks it optional).
    pub fn finish(self, wanted: &[&[u8]]) -> Result<Plan, BoltError> {
        let meta = self
            .metas
            .iter()
            .filter_map(|m| m.as_ref().ok())
            .max_by_key(|m| m.txid)
            .copied()
            .ok_or_else(|| BoltError::NotBbolt("the file ends before its meta pages".into()))?;
        if self.blocks.next < meta.pgid {
            return Err(BoltError::Corrupt(format!(
                "the file ends at page {}, the meta page says it has {} (truncated)",
                self.blocks.next, meta.pgid
            )));
        }
        let mut seen = HashSet::new();
        let mut root_leaves = vec![];
        walk(
            &self.branches,
            meta.root,
            meta.pgid,
            0,
            &mut seen,
            &mut root_leaves,
        )?;
        let mut buckets: HashMap<&[u8], BucketSource> = HashMap::new();
        for id in root_leaves {
            let bytes = self.bucket_leaves.get(&id).ok_or_else(|| {
                BoltError::Corrupt(format!(
                    "page {id} of the root bucket is not a leaf holding buckets"
                ))
            })?;
            for e in page::leaf_elements(bytes, id)? {
                if e.flags & page::BUCKET_ELEMENT == 0 {
                    continue;
                }
                if let Some(name) = wanted.iter().find(|w| **w == e.key) {
                    let src = match page::bucket_root(e.value, id)? {
                        BucketRoot::Page(p) => BucketSource::Pages(p),
                        BucketRoot::Inline(b) => BucketSource::Inline(b.to_vec()),
                    };
                    buckets.insert(name, src);
                }
            }
        }
        let mut plan = Plan {
            meta,
            leaves: HashMap::new(),
            inline: vec![],
            found: vec![false; wanted.len()],
        };
        for (i, name) in wanted.iter().enumerate() {
            match buckets.remove(name) {
                None => {}
                Some(BucketSource::Inline(b)) => {
                    plan.found[i] = true;
                    plan.inline.push((i, b));
                }
                Some(BucketSource::Pages(root)) => {
                    plan.found[i] = true;
                    let mut leaves = vec![];
                    walk(&self.branches, root, meta.pgid, 0, &mut seen, &mut leaves)?;
                    plan.leaves.extend(leaves.into_iter().map(|l| (l, i)));
                }
            }
        }
        Ok(plan)
    }
}

enum BucketSource {
    Pages(u64),
    Inline(Vec<u8>),
}

fn has_bucket(block: &[u8]) -> bool {
    // Only the element headers inside the first block are looked at; the root bucket of an
    // etcd database holds a dozen buckets, so its headers always fit there.
    let Some(h) = Header::parse(block) else {
        return false;
    };
    (0..usize::from(h.count))
        .map(|i| page::HEADER + i * 16)
        .take_while(|at| at + 4 <= block.len())
        .any(|at| u32::from_le_bytes(block[at..at + 4].try_into().unwrap_or_default()) & 1 != 0)
}

/// Collects the leaves below `id`, refusing pages reached twice, out of range, or too deep.
fn walk(
    branches: &HashMap<u64, Vec<u64>>,
    id: u64,
    hwm: u64,
    depth: usize,
    seen: &mut HashSet<u64>,
    leaves: &mut Vec<u64>,
) -> Result<(), BoltError> {
    if id < 2 || id >= hwm {
        return Err(BoltError::Corrupt(format!(
            "a branch points at page {id}, outside the file's data pages 2..{hwm}"
        )));
    }
    if depth > MAX_DEPTH {
        return Err(BoltError::Corrupt(format!(
            "the tree is deeper than {MAX_DEPTH} levels"
        )));
    }
    if !seen.insert(id) {
        return Err(BoltError::Corrupt(format!(
            "page {id} is reached twice (a loop in the tree)"
        )));
    }
    match branches.get(&id) {
        Some(children) => {
            for &c in children {
                walk(branches, c, hwm, depth + 1, seen, leaves)?;
            }
        }
        None => leaves.push(id),
    }
    Ok(())
}

/// What the second pass reads: the leaf pages of each wanted bucket, and inline buckets.
#[derive(Debug)]
pub struct Plan {
    /// The meta page in force.
    pub meta: Meta,
    /// Leaf page → index of its bucket in `wanted`.
    leaves: HashMap<u64, usize>,
    /// Inline buckets: index in `wanted` and the inline page.
    inline: Vec<(usize, Vec<u8>)>,
    /// Per wanted bucket, whether the database has it.
    pub found: Vec<bool>,
}

/// Receives every key/value of the wanted buckets, in no particular order.
pub trait Visitor {
    /// One element of bucket `bucket` (its index in `wanted`).
    ///
    /// # Errors
    /// A value the visitor refuses; it stops the read.
    fn visit(&mut self, bucket: usize, key: &[u8], value: &[u8]) -> Result<(), BoltError>;
}

/// The second pass: the leaves of the plan, element by element.
pub struct LeafScan<V> {
    blocks: Blocks,
    plan: Plan,
    spans: Spans,
    seen: usize,
    visitor: V,
}

impl<V: Visitor> LeafScan<V> {
    /// A scan over the same file as the [`TreeScan`] that made `plan`.
    ///
    /// # Errors
    /// An inline bucket whose page is broken, or one the visitor refuses.
    pub fn new(plan: Plan, mut visitor: V) -> Result<LeafScan<V>, BoltError> {
        for (bucket, bytes) in &plan.inline {
            visit_leaf(&mut visitor, *bucket, bytes, 0)?;
        }
        Ok(LeafScan {
            blocks: Blocks::default(),
            plan,
            spans: Spans::default(),
            seen: 0,
            visitor,
        })
    }

    /// Reads the next bytes of the file.
    ///
    /// # Errors
    /// A leaf that is not where the tree says, broken, or refused by the visitor.
    pub fn push(&mut self, data: &[u8]) -> Result<(), BoltError> {
        let mut blocks = std::mem::take(&mut self.blocks);
        let r = blocks.push(data, &mut |id, block| self.block(id, block));
        self.blocks = blocks;
        r
    }

    fn block(&mut self, id: u64, block: &[u8]) -> Result<(), BoltError> {
        if id < 2 || id >= self.plan.meta.pgid {
            return Ok(());
        }
        for (pid, bytes) in self.spans.feed(block) {
            self.leaf(pid, &bytes)?;
        }
        if !self.plan.leaves.contains_key(&id) {
            return Ok(());
        }
        let h = Header::parse(block)
            .ok_or_else(|| BoltError::Corrupt(format!("page {id}: cut short")))?;
        if h.id != id {
            return Err(BoltError::Corrupt(format!(
                "page {id} carries the id {} (the file changed between passes, or is corrupt)",
                h.id
            )));
        }
        let bytes = span(&h, id, block.len(), self.plan.meta.pgid).map_err(BoltError::Corrupt)?;
        if bytes == block.len() {
            self.leaf(id, block)
        } else {
            // Grown as blocks arrive, not reserved: a header may claim more than the file holds.
            let buf = block.to_vec();
            self.spans.open.push(Gathering {
                id,
                buf,
                want: bytes,
            });
            Ok(())
        }
    }

    fn leaf(&mut self, id: u64, bytes: &[u8]) -> Result<(), BoltError> {
        let bucket = self.plan.leaves[&id];
        self.seen += 1;
        visit_leaf(&mut self.visitor, bucket, bytes, id)
    }

    /// Ends the second pass.
    ///
    /// # Errors
    /// A leaf of the plan that never came (a truncated file).
    pub fn finish(self) -> Result<V, BoltError> {
        if self.seen != self.plan.leaves.len() || !self.spans.open.is_empty() {
            return Err(BoltError::Corrupt(format!(
                "{} of {} leaf pages were read (truncated)",
                self.seen,
                self.plan.leaves.len()
            )));
        }
        Ok(self.visitor)
    }
}

fn visit_leaf(v: &mut impl Visitor, bucket: usize, bytes: &[u8], id: u64) -> Result<(), BoltError> {
    for e in page::leaf_elements(bytes, id)? {
        if e.flags & page::BUCKET_ELEMENT != 0 {
            return Err(BoltError::Corrupt(format!(
                "page {id} holds a nested bucket, which etcd never writes"
            )));
        }
        v.visit(bucket, e.key, e.value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
