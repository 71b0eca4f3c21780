//! Signature checking with arbitrary signature bytes against a fixed allowed_signers file
//! (seeded with a genuine signature by that key, `seeds/signature/genuine.sig`): never
//! panics, and its message stays short.
#![no_main]
use libfuzzer_sys::fuzz_target;

const ALLOWED: &str =
    "backup@admin ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJDWxrb7MojpvhzaHZjXLkGqYiIDQ28Sh/KsLCSzr547\n";

fuzz_target!(|data: &[u8]| {
    let allowed = cpvault::trust::AllowedSigners::parse(ALLOWED, "fuzz").unwrap();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    if let Err(e) = allowed.verify(b"manifest bytes", data, now) {
        assert!(e.len() < 4096, "error of {} bytes", e.len());
    }
});
