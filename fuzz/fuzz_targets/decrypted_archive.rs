//! The archive reader after decryption (zstd → tar → sha256 → inner manifest) on arbitrary
//! bytes: never panics, and a failure's message stays short.
#![no_main]
use libfuzzer_sys::fuzz_target;

use cpvault::archive::reader::{read_decrypted, NullSink};

fuzz_target!(|data: &[u8]| {
    let out = read_decrypted(data, Box::new(NullSink));
    if let Some(f) = out.failure {
        assert!(
            f.message.len() < 4096,
            "message of {} bytes",
            f.message.len()
        );
    }
});
