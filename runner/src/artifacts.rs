//! The artifact disk cache: files by sha256 under `<dir>/sha256/<hex>`, verified on download.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::error::{Error, Result};
use proto::v1::ModelFile;

#[derive(Clone, Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    store: Arc<dyn ObjectStore>,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, store: Arc<dyn ObjectStore>) -> Result<Self> {
        std::fs::create_dir_all(dir.join("sha256"))?;
        std::fs::create_dir_all(dir.join("partial"))?;
        Ok(Self { dir, store })
    }

    /// The local path of `file`, downloading and verifying it first if needed.
    pub async fn fetch(&self, model: &str, file: &ModelFile) -> Result<PathBuf> {
        let digest = file.sha256.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidRequest(format!("file {} has a malformed sha256", file.path)));
        }
        let target = self.dir.join("sha256").join(&digest);
        if tokio::fs::try_exists(&target).await? {
            return Ok(target);
        }
        // Download under a unique name, verify, then rename into place: readers never see partial files.
        let partial = self.dir.join("partial").join(format!("{digest}.{}", std::process::id()) + &unique_suffix());
        let result = self.download(model, file, &digest, &partial).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&partial, &target).await?;
                Ok(target)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    async fn download(&self, model: &str, file: &ModelFile, digest: &str, partial: &Path) -> Result<()> {
        let location = object_store::path::Path::parse(&file.object_path)
            .map_err(|e| Error::InvalidRequest(format!("bad object path for {}: {e}", file.path)))?;
        let fetch_err = |source| Error::Fetch { path: file.path.clone(), source };
        let mut stream = self.store.get(&location).await.map_err(fetch_err)?.into_stream();
        let mut out = tokio::fs::File::create(partial).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(fetch_err)?;
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        let actual = hex::encode(hasher.finalize());
        if actual != digest {
            return Err(Error::DigestMismatch {
                model: model.to_owned(),
                path: file.path.clone(),
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(())
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
