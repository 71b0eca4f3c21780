//! The listing-cache parser on arbitrary bytes, both as the zstd frame the store holds and
//! as the JSON inside one: never panics, errors stay short.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let packed = zstd::bulk::compress(data, 1).expect("compresses");
    for bytes in [data, &packed[..]] {
        if let Err(e) = cpvault::catalog::cache::parse(bytes, "admin") {
            assert!(e.len() < 4096, "error of {} bytes", e.len());
        }
    }
});
