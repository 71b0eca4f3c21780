//! cpvault's library: the archive format and pipelines, keys, sources, verification and the
//! command implementations the `cpvault` binary dispatches to. It never exits the process;
//! only the commands' renderers print.

pub mod archive;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod commit;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod etcdctl;
pub mod extract;
pub mod interrupt;
pub mod layers;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod restore;
pub mod sources;
pub mod status;
pub mod text;
pub mod trust;
pub mod verify;
