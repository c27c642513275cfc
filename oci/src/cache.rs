//! The node's content-addressed store of pulled components.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::OnceCell;

use crate::{OciError, Pulled, sha256_digest};

/// Why the cache produced no component.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Pull(OciError),
    #[error("blob cache: {0}")]
    Io(String),
}

/// A content-addressed store of pulled components with a size limit,
/// evicting the least recently used. Blobs are kept by the digest of their
/// content and checked against it on every read; an index maps manifest
/// digests to them. Concurrent requests for one manifest share one
/// download.
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    inflight: Mutex<HashMap<String, Arc<Download>>>,
}

/// One download that every concurrent caller for a manifest awaits.
type Download = OnceCell<Result<Arc<Vec<u8>>, CacheError>>;

impl BlobCache {
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self, CacheError> {
        let dir = dir.into();
        for sub in ["blobs", "manifests"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| CacheError::Io(format!("{}: {e}", dir.join(sub).display())))?;
        }
        Ok(Self {
            dir,
            max_bytes,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join(digest.replace(':', "-"))
    }

    fn index_path(&self, manifest_digest: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(manifest_digest.replace(':', "-"))
    }

    /// The component of the artifact with `manifest_digest`, pulled with
    /// `fetch` (once, however many callers ask at the same time) when the
    /// cache does not hold it intact.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        manifest_digest: &str,
        fetch: F,
    ) -> Result<Arc<Vec<u8>>, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Pulled, OciError>>,
    {
        if let Some(component) = self.cached(manifest_digest) {
            return Ok(Arc::new(component));
        }
        let cell = self
            .inflight
            .lock()
            .expect("inflight lock")
            .entry(manifest_digest.to_owned())
            .or_default()
            .clone();
        let result = cell
            .get_or_init(|| async {
                let pulled = fetch().await.map_err(CacheError::Pull)?;
                self.store(manifest_digest, &pulled)?;
                Ok(Arc::new(pulled.component))
            })
            .await
            .clone();
        self.inflight
            .lock()
            .expect("inflight lock")
            .remove(manifest_digest);
        result
    }

    /// Whether the cache holds the component of `manifest_digest` (not
    /// checked against its digest yet: reading it is).
    pub fn holds(&self, manifest_digest: &str) -> bool {
        self.index_path(manifest_digest).exists()
    }

    /// A cached component, if its blob is there and still matches its
    /// digest.
    fn cached(&self, manifest_digest: &str) -> Option<Vec<u8>> {
        let layer = std::fs::read_to_string(self.index_path(manifest_digest)).ok()?;
        let path = self.blob_path(layer.trim());
        let bytes = std::fs::read(&path).ok()?;
        if sha256_digest(&bytes) != layer.trim() {
            tracing::warn!(
                "cached blob {} is damaged; pulling it again",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(bytes)
    }

    fn store(&self, manifest_digest: &str, pulled: &Pulled) -> Result<(), CacheError> {
        let io =
            |path: &Path, e: std::io::Error| CacheError::Io(format!("{}: {e}", path.display()));
        let blob = self.blob_path(&pulled.layer_digest);
        let tmp = blob.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &pulled.component).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &blob).map_err(|e| io(&blob, e))?;
        let index = self.index_path(manifest_digest);
        std::fs::write(&index, &pulled.layer_digest).map_err(|e| io(&index, e))?;
        self.evict(&blob);
        Ok(())
    }

    /// Removes least recently used blobs until the cache fits its limit,
    /// never the one just added.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("blobs")) else {
            return;
        };
        let mut blobs: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| {
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|(_, size, _)| size).sum();
        blobs.sort();
        for (_, size, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

/// Marks a blob as just used (its modification time orders eviction).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pulled(manifest: &str, content: &[u8]) -> Pulled {
        Pulled {
            manifest_digest: manifest.into(),
            layer_digest: sha256_digest(content),
            component: content.to_vec(),
        }
    }

    #[tokio::test]
    async fn the_cache_fetches_once_checks_content_and_evicts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 10).unwrap();
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(pulled("sha256:m1", b"aaaaaa"))
        };
        let (one, two) = tokio::join!(
            cache.get_or_fetch("sha256:m1", fetch),
            cache.get_or_fetch("sha256:m1", fetch)
        );
        assert_eq!(one.unwrap().as_slice(), b"aaaaaa");
        assert_eq!(two.unwrap().as_slice(), b"aaaaaa");
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one download shared"
        );
        cache.get_or_fetch("sha256:m1", fetch).await.unwrap();
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "then served from disk"
        );

        // A damaged blob on disk is noticed and pulled again.
        let blob = cache.blob_path(&sha256_digest(b"aaaaaa"));
        std::fs::write(&blob, b"aaaaab").unwrap();
        cache.get_or_fetch("sha256:m1", fetch).await.unwrap();
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Over 10 bytes, the least recently used blob goes.
        cache
            .get_or_fetch("sha256:m2", || async { Ok(pulled("sha256:m2", b"bbbbbb")) })
            .await
            .unwrap();
        assert!(!blob.exists());
        assert!(cache.blob_path(&sha256_digest(b"bbbbbb")).exists());

        let failed = cache
            .get_or_fetch("sha256:m3", || async {
                Err(OciError::NotFound {
                    reference: "r".into(),
                })
            })
            .await;
        assert!(matches!(
            failed,
            Err(CacheError::Pull(OciError::NotFound { .. }))
        ));
    }
}
