//! Hashing as bytes stream past: the sha256 of an entry and, in the same pass, the sha256 of
//! all but its last 32 bytes, which is how etcd seals a snapshot (`snapshot save` appends the
//! sha256 of the database). One pass serves both by cloning the hash state 32 bytes before
//! the end; it must never buffer more than those 32 bytes.

use sha2::{Digest, Sha256};

/// Size of etcd's snapshot trailer.
pub const TRAILER_LEN: usize = 32;

/// Streaming sha256 that also knows the hash of everything but the last 32 bytes.
#[derive(Clone, Default)]
pub struct TrailerHasher {
    head: Sha256,
    tail: [u8; TRAILER_LEN],
    tail_len: usize,
    total: u64,
}

/// What [`TrailerHasher::finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// sha256 of all bytes.
    pub sha256: [u8; 32],
    /// Bytes seen.
    pub size: u64,
    /// Whether the size has etcd's trailer shape (db pages + 32 bytes, `size % 512 == 32`).
    pub trailer_expected: bool,
    /// Whether the last 32 bytes equal the sha256 of the rest.
    pub trailer_matches: bool,
}

impl TrailerHasher {
    /// A new hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if data.len() >= TRAILER_LEN {
            self.head.update(&self.tail[..self.tail_len]);
            let split = data.len() - TRAILER_LEN;
            self.head.update(&data[..split]);
            self.tail.copy_from_slice(&data[split..]);
            self.tail_len = TRAILER_LEN;
            return;
        }
        // Short write: shift out of the tail what no longer belongs to the last 32 bytes.
        let overflow = (self.tail_len + data.len()).saturating_sub(TRAILER_LEN);
        if overflow > 0 {
            self.head.update(&self.tail[..overflow]);
            self.tail.copy_within(overflow..self.tail_len, 0);
            self.tail_len -= overflow;
        }
        let n = data.len();
        self.tail[self.tail_len..self.tail_len + n].copy_from_slice(data);
        self.tail_len += n;
    }

    /// The digests.
    pub fn finish(self) -> Digests {
        let without_tail = self.head.clone().finalize();
        let mut full = self.head;
        full.update(&self.tail[..self.tail_len]);
        let trailer_matches =
            self.tail_len == TRAILER_LEN && without_tail.as_slice() == &self.tail[..];
        Digests {
            sha256: full.finalize().into(),
            size: self.total,
            trailer_expected: self.total % 512 == TRAILER_LEN as u64,
            trailer_matches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(len: usize) -> Vec<u8> {
        let mut db: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let h = Sha256::digest(&db);
        db.extend_from_slice(&h);
        db
    }

    #[test]
    fn matches_plain_sha256_for_any_split() {
        let data = sealed(4096);
        for step in [1, 7, 31, 32, 33, 100, 5000] {
            let mut h = TrailerHasher::new();
            for c in data.chunks(step) {
                h.update(c);
            }
            let d = h.finish();
            assert_eq!(
                d.sha256.as_slice(),
                Sha256::digest(&data).as_slice(),
                "step {step}"
            );
            assert!(d.trailer_expected && d.trailer_matches, "step {step}");
            assert_eq!(d.size, data.len() as u64);
        }
    }

    #[test]
    fn detects_a_bad_trailer() {
        let mut data = sealed(4096);
        data[10] ^= 1;
        let mut h = TrailerHasher::new();
        h.update(&data);
        let d = h.finish();
        assert!(d.trailer_expected && !d.trailer_matches);
    }

    #[test]
    fn short_input() {
        let mut h = TrailerHasher::new();
        h.update(b"abc");
        let d = h.finish();
        assert!(!d.trailer_expected && !d.trailer_matches);
        assert_eq!(d.sha256.as_slice(), Sha256::digest(b"abc").as_slice());
    }
}
