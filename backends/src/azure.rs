//! Placeholder while the azure store is being written this session: refuses every URL.

use std::sync::Arc;

use object_store::ObjectStore;

use crate::StoreError;

/// Refuses `url`: this store is not built yet.
///
/// # Errors
/// Always [`StoreError::BadUrl`].
pub fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
    Err(StoreError::BadUrl {
        url: url.to_string(),
        reason: "this store is not built yet".into(),
    })
}
