//! Sources: where backup entries come from. Each produces [`SourceEntry`] values with a
//! known size and a byte stream opened lazily by the writer; a source must never write
//! plaintext to local disk or change anything where it reads (no chmod, no copies).

pub mod local;

pub use crate::archive::writer::SourceEntry;
