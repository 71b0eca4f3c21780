use super::*;

const PS: usize = 512;

fn meta(id: u64, root: u64, pgid: u64) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[8..10].copy_from_slice(&page::META.to_le_bytes());
    b[16..20].copy_from_slice(&page::MAGIC.to_le_bytes());
    b[20..24].copy_from_slice(&page::VERSION.to_le_bytes());
    b[24..28].copy_from_slice(&(PS as u32).to_le_bytes());
    b[32..40].copy_from_slice(&root.to_le_bytes());
    b[56..64].copy_from_slice(&pgid.to_le_bytes());
    b[64..72].copy_from_slice(&1u64.to_le_bytes());
    let sum = page::fnv1a64(&b[16..72]);
    b[72..80].copy_from_slice(&sum.to_le_bytes());
    b
}

/// A branch page at `id` with one child, spanning `1 + overflow` blocks.
fn branch(id: u64, child: u64, overflow: u32) -> Vec<u8> {
    let mut b = vec![0u8; PS];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[8..10].copy_from_slice(&page::BRANCH.to_le_bytes());
    b[10..12].copy_from_slice(&1u16.to_le_bytes());
    b[12..16].copy_from_slice(&overflow.to_le_bytes());
    b[16..20].copy_from_slice(&16u32.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[24..32].copy_from_slice(&child.to_le_bytes());
    b
}

fn scan(file: &[u8]) -> Result<Plan, BoltError> {
    let mut t = TreeScan::new();
    // Odd chunk sizes: blocks must be cut the same whatever the reads.
    for chunk in file.chunks(333) {
        t.push(chunk)?;
    }
    t.finish(&mvcc_buckets())
}

fn mvcc_buckets() -> [&'static [u8]; 2] {
    [b"key", b"meta"]
}

#[test]
fn a_loop_in_the_tree_is_refused() {
    let mut file = meta(0, 2, 4);
    file.extend(meta(1, 2, 4));
    file.extend(branch(2, 3, 0));
    file.extend(branch(3, 2, 0));
    let e = scan(&file).unwrap_err();
    assert!(e.to_string().contains("reached twice"), "{e}");
}

#[test]
fn a_truncated_file_is_refused_without_holding_what_it_claims() {
    let mut file = meta(0, 2, 1 << 40);
    file.extend(meta(1, 2, 1 << 40));
    file.extend(branch(2, 3, 100_000));
    let e = scan(&file).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn many_overlapping_multi_page_candidates_hit_a_limit() {
    let mut file = meta(0, 2, 10_000);
    file.extend(meta(1, 2, 10_000));
    for id in 2..400 {
        file.extend(branch(id, 3, 5_000));
    }
    assert!(matches!(scan(&file), Err(BoltError::Limit(_))));
}
