//! The etcd snapshot reader (bbolt page tree, then MVCC records) on arbitrary bytes, in its
//! two passes: never panics, stays within its memory limits, and its errors stay short.
#![no_main]
use libfuzzer_sys::fuzz_target;

use cpvault::inspect::mvcc::Wants;

fuzz_target!(|data: &[u8]| {
    let wants = Wants {
        digests: true,
        values: Some(Box::new(|_: &[u8]| true)),
    };
    if let Err(e) = cpvault::inspect::read_snapshot(|| Ok(data), wants) {
        assert!(
            e.to_string().len() < 4096,
            "error of {} bytes",
            e.to_string().len()
        );
    }
});
