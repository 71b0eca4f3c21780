//! `format.json` checking on arbitrary bytes: never panics, errors stay short.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cpvault::archive::manifest::check_format_json(data) {
        assert!(e.len() < 4096, "error of {} bytes", e.len());
    }
});
