//! cpvault's library: the archive format and pipelines, keys, sources, verification and the
//! command implementations the `cpvault` binary dispatches to. It never exits the process;
//! only the commands' renderers print.

/// Writes a line to stderr, ignoring a closed or failing stderr: a message must never turn
/// into a panic (`eprintln!` panics when stderr is a closed pipe).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        $crate::progress::say(format_args!($($arg)*), true);
    }};
}

/// [`say!`] without the newline.
#[macro_export]
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        $crate::progress::say(format_args!($($arg)*), false);
    }};
}

pub mod archive;
pub mod catalog;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod commit;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod etcdctl;
pub mod extract;
pub mod inspect;
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
