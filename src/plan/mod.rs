//! Plans: pure decisions computed before anything changes (retention now, restore later),
//! printed by `--dry-run` and executed separately. Nothing in here performs I/O.

pub mod prune;
pub mod restore;
pub mod retention;
