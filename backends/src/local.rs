//! The local-directory store: a directory on this machine, addressed as `file:///abs/path`
//! or a plain path. It only builds the backend; it must never create anything but the store
//! directory itself, and only when asked to.

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use crate::StoreError;

pub(crate) fn open(
    dir: &Path,
    create: bool,
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, String), StoreError> {
    let abs = std::path::absolute(dir).map_err(|e| StoreError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let display = format!("file://{}", abs.display());
    if !abs.is_dir() {
        if abs.exists() {
            return Err(StoreError::BadUrl {
                url: url.to_string(),
                reason: "exists but is not a directory".into(),
            });
        }
        if !create {
            return Err(StoreError::MissingDirectory { store: display });
        }
        create_private_dir(&abs).map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: format!("cannot create directory: {e}"),
        })?;
    }
    let fs = LocalFileSystem::new_with_prefix(&abs)
        .map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .with_automatic_cleanup(true)
        .with_fsync(true);
    Ok((Arc::new(fs), display))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
