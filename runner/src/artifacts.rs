//! The artifact disk cache: files by sha256 under `<dir>/sha256/<hex>`. A file is verified
//! when it is downloaded and again each time a model is loaded from it (a corrupt copy is
//! deleted and fetched anew). The cache is bounded in size: after a download, the least
//! recently used files (by modification time, which a use refreshes, so the order survives
//! a restart) are deleted until it fits, sparing the files of the model being loaded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};

use crate::blocking;
use crate::error::{Error, Result};
use proto::v1::{ModelFile, ModelSpec};

/// The registry's content address of a tenant's blob: `(tenant id, lower-case hex sha256)` to
/// the object path, or None for a digest it does not take. Handed in by whoever opens the
/// store, so that the layout stays written in one place (registry `ObjectKey`).
pub type BlobAddress = Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// Refuses a spec unless every file's object path is exactly the content address of its sha256
/// under the tenant the spec names: no other tenant's objects, no staging or session objects,
/// no `..`. Called before the model is looked up, so a refused spec fetches nothing.
pub fn check_spec(spec: &ModelSpec, address: &BlobAddress) -> Result<()> {
    let tenant = spec.tenant_id.as_str();
    if tenant.is_empty() || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Error::InvalidRequest(format!("model {} names no valid tenant", spec.display_name)));
    }
    for file in &spec.files {
        let digest = &file.sha256;
        let is_hex = digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let expected = if is_hex { address(tenant, digest) } else { None };
        if expected.as_deref() != Some(file.object_path.as_str()) {
            return Err(Error::OutsideTenant { model: spec.display_name.clone(), path: file.path.clone() });
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    store: Arc<dyn ObjectStore>,
    max_bytes: u64,
}

impl ArtifactCache {
    pub fn new(dir: PathBuf, store: Arc<dyn ObjectStore>, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir.join("sha256"))?;
        std::fs::create_dir_all(dir.join("partial"))?;
        Ok(Self { dir, store, max_bytes })
    }

    /// The local paths of a model's files, fetched as needed, then the cache trimmed to its
    /// size bound without touching them. Files come down four at a time (a model sharded into
    /// several weight files).
    pub async fn fetch_all(&self, model: &str, files: &[ModelFile]) -> Result<Vec<PathBuf>> {
        let mut paths = Vec::with_capacity(files.len());
        for group in files.chunks(4) {
            paths.extend(futures::future::try_join_all(group.iter().map(|file| self.fetch(model, file))).await?);
        }
        self.trim(&paths).await?;
        Ok(paths)
    }

    /// Deletes least recently used files until the cache fits `max_bytes`, sparing `keep`.
    async fn trim(&self, keep: &[PathBuf]) -> Result<()> {
        let mut entries = Vec::new();
        let mut listing = tokio::fs::read_dir(self.dir.join("sha256")).await?;
        while let Some(entry) = listing.next_entry().await? {
            let meta = entry.metadata().await?;
            entries.push((meta.modified()?, meta.len(), entry.path()));
        }
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if keep.contains(&path) {
                continue;
            }
            tracing::info!(file = %path.display(), bytes = len, "evicting a file from the artifact cache");
            match tokio::fs::remove_file(&path).await {
                Ok(()) => total -= len,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The local path of `file`, downloading and verifying it first if needed.
    pub async fn fetch(&self, model: &str, file: &ModelFile) -> Result<PathBuf> {
        let digest = file.sha256.to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidRequest(format!("file {} has a malformed sha256", file.path)));
        }
        let target = self.dir.join("sha256").join(&digest);
        if tokio::fs::try_exists(&target).await? {
            if use_if_intact(target.clone(), digest.clone()).await? {
                return Ok(target);
            }
            tracing::warn!(model, file = %file.path, "a cached file does not match its sha256; fetching it again");
            tokio::fs::remove_file(&target).await?;
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
            .map_err(|_| Error::InvalidRequest(format!("file {} has a malformed object path", file.path)))?;
        let fetch_err = |source: object_store::Error| {
            tracing::warn!(model, file = %file.path, object = %location, error = %source, "fetching a model file failed");
            Error::Fetch { path: file.path.clone(), source }
        };
        let mut stream = self.store.get(&location).await.map_err(fetch_err)?.into_stream();
        let partial = partial.to_owned();
        let mut out = blocking::run("creating a cache file", move || Ok(HashedFile::create(&partial)?)).await?;
        // Chunks are written (and hashed) on the blocking pool a few MiB at a time.
        let (mut pending, mut pending_bytes) = (Vec::new(), 0);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(fetch_err)?;
            pending_bytes += chunk.len();
            pending.push(chunk);
            if pending_bytes >= WRITE_BYTES {
                out = out.write(std::mem::take(&mut pending)).await?;
                pending_bytes = 0;
            }
        }
        let actual = out.write(pending).await?.hex_digest();
        if actual != digest {
            tracing::warn!(model, file = %file.path, object = %location, "a fetched file does not match its sha256");
            return Err(Error::DigestMismatch { model: model.to_owned(), path: file.path.clone() });
        }
        Ok(())
    }
}

/// Bytes a download gathers before it writes them out.
const WRITE_BYTES: usize = 4 << 20;

/// A file being downloaded and the sha256 of what was written to it so far.
struct HashedFile {
    file: std::fs::File,
    hasher: Sha256,
}

impl HashedFile {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self { file: std::fs::File::create(path)?, hasher: Sha256::new() })
    }

    /// Appends `chunks` and hashes them, on the blocking pool.
    async fn write(mut self, chunks: Vec<Bytes>) -> Result<Self> {
        if chunks.is_empty() {
            return Ok(self);
        }
        blocking::run("writing a cache file", move || {
            use std::io::Write as _;
            for chunk in chunks {
                self.hasher.update(&chunk);
                self.file.write_all(&chunk)?;
            }
            Ok(self)
        })
        .await
    }

    fn hex_digest(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// Whether the cached file at `path` still has the sha256 `digest` (hex); if so, a use makes
/// it the most recently used (its modification time is the LRU order). Read on the blocking pool.
async fn use_if_intact(path: PathBuf, digest: String) -> Result<bool> {
    blocking::run("verifying a cached file", move || {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hex::encode(hasher.finalize()) != digest {
            return Ok(false);
        }
        std::fs::File::options().append(true).open(&path)?.set_modified(std::time::SystemTime::now())?;
        Ok(true)
    })
    .await
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(".{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// The registry's layout, as the binary hands it in.
    fn address() -> BlobAddress {
        Arc::new(|tenant: &str, sha256: &str| Some(format!("mg/tenants/{tenant}/blobs/sha256/{sha256}")))
    }

    fn spec(tenant: &str, sha256: &str, object_path: &str) -> ModelSpec {
        let file =
            ModelFile { path: "config.json".into(), sha256: sha256.into(), size: 1, object_path: object_path.into() };
        ModelSpec { display_name: "t/m@1".into(), tenant_id: tenant.into(), files: vec![file], ..ModelSpec::default() }
    }

    #[test]
    fn only_the_tenants_content_address_of_each_digest_passes() {
        let own = format!("mg/tenants/t1/blobs/sha256/{A}");
        assert!(check_spec(&spec("t1", A, &own), &address()).is_ok());
        let refused = [
            spec("t2", A, &own),
            spec("t1", A, &format!("mg/tenants/t2/blobs/sha256/{A}")),
            spec("t1", A, &format!("mg/tenants/t1/blobs/sha256/../../t2/blobs/sha256/{A}")),
            spec("t1", A, "mg/tenants/t1/staging/u1/data"),
            spec("t1", &A.replace('0', "1"), &own),
            spec("t1", &A.to_uppercase(), &own),
            spec("t1", "", &own),
        ];
        for spec in refused {
            let error = check_spec(&spec, &address()).expect_err("refused");
            assert!(matches!(error, Error::OutsideTenant { .. }), "{error}");
            assert_eq!(error.status().code(), tonic::Code::PermissionDenied);
            assert!(!error.to_string().contains(A), "{error}");
        }
        for tenant in ["", "t1/../t2", "t 1"] {
            let error = check_spec(&spec(tenant, A, &own), &address()).expect_err("refused");
            assert_eq!(error.status().code(), tonic::Code::InvalidArgument, "{tenant:?}: {error}");
        }
    }

    #[tokio::test]
    async fn a_fetched_file_is_kept_and_a_corrupt_copy_is_fetched_again() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let bytes: Vec<u8> = (0..WRITE_BYTES + 12_345).map(|i| (i % 251) as u8).collect();
        let digest = hex::encode(Sha256::digest(&bytes));
        let path = format!("mg/tenants/t1/blobs/sha256/{digest}");
        store.put(&object_store::path::Path::from(path.as_str()), bytes.clone().into()).await.expect("put");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::new(dir.path().to_path_buf(), store, u64::MAX).expect("cache");
        let file = &spec("t1", &digest, &path).files[0];

        let local = cache.fetch("t/m@1", file).await.expect("fetched");
        assert_eq!(std::fs::read(&local).expect("cached"), bytes);
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1);
        std::fs::File::options().append(true).open(&local).expect("open").set_modified(old).expect("aged");
        assert_eq!(cache.fetch("t/m@1", file).await.expect("from the cache"), local);
        let used = std::fs::metadata(&local).expect("meta").modified().expect("mtime");
        assert!(used > old, "a use refreshes the file's place in the LRU order");

        std::fs::write(&local, b"corrupt").expect("corrupted");
        assert_eq!(cache.fetch("t/m@1", file).await.expect("fetched again"), local);
        assert_eq!(std::fs::read(&local).expect("cached"), bytes);
        assert_eq!(std::fs::read_dir(dir.path().join("partial")).expect("partials").count(), 0);
    }

    #[tokio::test]
    async fn a_wrong_checksum_names_no_digest_and_leaves_nothing_cached() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = format!("mg/tenants/t1/blobs/sha256/{A}");
        store.put(&object_store::path::Path::from(path.as_str()), b"other bytes".to_vec().into()).await.expect("put");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::new(dir.path().to_path_buf(), store, u64::MAX).expect("cache");
        let file = &spec("t1", A, &path).files[0];
        let error = cache.fetch("t/m@1", file).await.expect_err("the bytes do not match");
        let status = error.status();
        assert_eq!(status.code(), tonic::Code::DataLoss);
        let actual = hex::encode(Sha256::digest(b"other bytes"));
        for secret in [A, actual.as_str(), path.as_str()] {
            assert!(!status.message().contains(secret), "{status:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path().join("sha256")).expect("cache").count(), 0);
        assert_eq!(std::fs::read_dir(dir.path().join("partial")).expect("partials").count(), 0);
    }
}
