//! The store's errors: each names the store and the key, and says what to do.

/// Errors from a store operation. Each names the store and the key, and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL could not be understood.
    #[error(
        "store URL '{url}': {reason}; use file:///abs/path, a plain directory path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, or memory://"
    )]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local store directory does not exist.
    #[error(
        "store '{store}': directory does not exist; check --store, or run a backup to create it"
    )]
    MissingDirectory {
        /// The store.
        store: String,
    },
    /// The object does not exist.
    #[error("store '{store}': object '{key}' not found")]
    NotFound {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// A create-if-absent put found an object already there.
    #[error("store '{store}': object '{key}' already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The store.
        store: String,
        /// The key.
        key: String,
    },
    /// Anything else the backend reported.
    #[error("store '{store}': {op} '{key}' failed: {source}")]
    Backend {
        /// The store.
        store: String,
        /// The operation.
        op: &'static str,
        /// The key.
        key: String,
        /// The backend's error.
        #[source]
        source: Box<object_store::Error>,
    },
}
