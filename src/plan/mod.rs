//! Plans: pure decisions computed before anything changes (retention here; restore's step
//! plan sits with the rest of restore in [`crate::restore::plan`]), printed by `--dry-run` and
//! executed separately. Nothing in here performs I/O.

pub mod prune;
pub mod retention;
