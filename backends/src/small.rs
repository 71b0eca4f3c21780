//! Small objects (manifests, signatures, drill records) read whole and bounded: one request,
//! refused past a limit, and on a local store one blocking file read (listing a fleet reads
//! thousands of them, and object_store's file streams hop threads for every chunk).

use bytes::Bytes;
use futures::stream::StreamExt;

use crate::{Store, StoreError};

/// A small object read whole, or refused for its size.
#[derive(Debug)]
pub enum Small {
    /// Its bytes (at most the limit).
    Bytes(Bytes),
    /// It holds more than the limit: the size announced or read so far.
    TooLarge(u64),
}

/// Reads at most `limit` bytes of `file` (one more to tell that it holds more).
fn read_bounded(file: &std::path::Path, limit: u64) -> std::io::Result<Small> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Asked before opening, so that nothing but a regular file is opened (opening a device
    // node can act); non-blocking, so that a FIFO swapped in meanwhile cannot hold the open;
    // the opened file's own metadata then says what was opened (reads of a regular file
    // ignore the flag).
    if !std::fs::metadata(file)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    if meta.len() > limit {
        return Ok(Small::TooLarge(meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    let n = f.take(limit + 1).read_to_end(&mut buf)? as u64;
    if n > limit {
        return Ok(Small::TooLarge(n));
    }
    Ok(Small::Bytes(Bytes::from(buf)))
}

impl Store {
    /// Reads a whole small object (a manifest, a signature) in one request, refusing it once
    /// it turns out to hold more than `limit` bytes: [`Small::TooLarge`] with the size seen.
    /// A local store reads the file in one blocking call (listing a fleet reads thousands of
    /// these, and object_store's file streams hop threads for every chunk).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when absent; the backend's error.
    pub async fn get_small(&self, key: &str, limit: u64) -> Result<Small, StoreError> {
        if let Some(file) = self.local_file(key) {
            let read = tokio::task::spawn_blocking(move || read_bounded(&file, limit))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()));
            return match read.and_then(|r| r) {
                Ok(small) => Ok(small),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound {
                    store: self.display.clone(),
                    key: key.to_string(),
                }),
                Err(e) => Err(self.err(
                    "read",
                    key,
                    object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: Box::new(e),
                    },
                )),
            };
        }
        let (size, mut stream) = self.get_stream(key).await?;
        if size > limit {
            return Ok(Small::TooLarge(size));
        }
        let mut buf = bytes::BytesMut::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Ok(Small::TooLarge((buf.len() + chunk.len()) as u64));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Small::Bytes(buf.freeze()))
    }

    /// The file of `key` in a local store, when the key is plain enough that object_store
    /// would map it to the same path (letters, digits, `._-` and `/`-separated non-dot
    /// segments); `None` otherwise, and for other stores.
    fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        let plain = !key.is_empty()
            && key.split('/').all(|seg| {
                !seg.is_empty()
                    && !seg.starts_with('.')
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        plain.then(|| root.join(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn bytes_of(s: Small) -> Vec<u8> {
        match s {
            Small::Bytes(b) => b.to_vec(),
            Small::TooLarge(n) => panic!("refused as {n} bytes"),
        }
    }

    /// A local store's fast path and object_store's stream read the same objects the same
    /// way: whole, refused over the limit, absent.
    #[tokio::test]
    async fn small_reads_agree_between_the_file_path_and_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let local = Store::open(dir.path().to_str().unwrap(), false).unwrap();
        // The same directory through object_store only (no local fast path).
        let plain = Store::from_object_store(
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
            "plain".into(),
        );
        local
            .put_create("c1/a.manifest.json", Bytes::from_static(b"{\"x\":1}"))
            .await
            .unwrap();
        local
            .put_create("c1/big.manifest.json", Bytes::from(vec![b'x'; 5000]))
            .await
            .unwrap();
        for store in [&local, &plain] {
            assert_eq!(
                bytes_of(store.get_small("c1/a.manifest.json", 100).await.unwrap()),
                b"{\"x\":1}"
            );
            assert!(matches!(
                store.get_small("c1/big.manifest.json", 4096).await.unwrap(),
                Small::TooLarge(5000)
            ));
            assert_eq!(
                bytes_of(store.get_small("c1/big.manifest.json", 5000).await.unwrap()).len(),
                5000
            );
            assert!(matches!(
                store.get_small("c1/none.manifest.json", 100).await,
                Err(StoreError::NotFound { .. })
            ));
        }
        assert!(local.local_file("c1/a.manifest.json").is_some());
        // Keys object_store would encode or refuse go its way, not the file path's.
        for odd in ["c1/../x", "c1/.hidden", "c1/a#1", "c1//a", "", "c1/a b"] {
            assert!(local.local_file(odd).is_none(), "{odd:?}");
        }
        // A directory where a manifest should be is not a manifest.
        std::fs::create_dir(dir.path().join("c1/d.manifest.json")).unwrap();
        assert!(local.get_small("c1/d.manifest.json", 100).await.is_err());
        // Nor is a FIFO, which would block a plain open.
        let fifo = dir.path().join("c1/f.manifest.json");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(local.get_small("c1/f.manifest.json", 100).await.is_err());
    }
}
