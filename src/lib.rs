//! cpvault's library: the archive format and pipelines, keys, sources, verification and the
//! command implementations the `cpvault` binary dispatches to. It never exits the process;
//! only the commands' renderers print.

pub mod archive;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod error;
pub mod layers;
pub mod plan;
pub mod progress;
pub mod sources;
pub mod verify;
