//! Blob storage behind object_store. [`ObjectKey`] is the only place object paths are made.
//! Writing uploads (streaming, hashing) is in `write.rs`; resumable sessions' chunks and
//! multipart uploads in `sessions.rs`.

mod instrumented;
mod sessions;
mod write;

pub use write::hash_stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use crate::names::Digest;
use crate::{Error, Result};

/// Where blobs live, chosen by URL.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `file:///path`, `memory://`, `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    pub url: String,
    /// Endpoint of an S3-compatible server or of an Azure emulator (`http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Extra options for the cloud builder, named as object_store names them
    /// (`aws_region`, `azure_storage_use_emulator`, `google_service_account`, …).
    /// Credentials come from each cloud's usual environment variables.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Retries of a failed cloud call (with backoff from 100 ms)...
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// ...within at most this long. Short, so that an outage answers 503 in about a second
    /// rather than holding requests (object_store's own default is 10 retries over 3 minutes).
    #[serde(default = "default_retry_timeout_secs")]
    pub retry_timeout_secs: u64,
}

fn default_max_retries() -> usize {
    3
}

fn default_retry_timeout_secs() -> u64 {
    10
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: None,
            options: BTreeMap::new(),
            max_retries: default_max_retries(),
            retry_timeout_secs: default_retry_timeout_secs(),
        }
    }
}

impl StorageConfig {
    fn retry(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            max_retries: self.max_retries,
            retry_timeout: std::time::Duration::from_secs(self.retry_timeout_secs),
            ..object_store::RetryConfig::default()
        }
    }
}

/// An object's place in the store. Only this type formats object paths.
#[derive(Debug, Clone, Copy)]
pub enum ObjectKey<'a> {
    /// `{prefix}/tenants/{tenant_id}/blobs/sha256/{hex}`: content-addressed, never shared across tenants.
    Blob { tenant_id: &'a str, digest: &'a Digest },
    /// `{prefix}/tenants/{tenant_id}/staging/{upload_id}`: bytes whose digest is not known yet.
    Staging { tenant_id: &'a str, upload_id: &'a str },
    /// `{prefix}/tenants/{tenant_id}/sessions/{session_id}/{index}`: one chunk of a resumable upload
    /// on a store without multipart uploads of its own, or the file a presigned PUT delivers.
    Chunk { tenant_id: &'a str, session_id: &'a str, index: u64 },
    /// `{prefix}/tenants/{tenant_id}/sessions/{session_id}/assembled`: the object a resumable
    /// session's multipart upload becomes, until its digest is checked.
    Assembled { tenant_id: &'a str, session_id: &'a str },
    /// `{prefix}/tenants/{tenant_id}/staging`: the folder of a tenant's staged uploads.
    StagingFolder { tenant_id: &'a str },
    /// `{prefix}/tenants/{tenant_id}/sessions/{session_id}`: the folder of a session's objects.
    SessionFolder { tenant_id: &'a str, session_id: &'a str },
    /// `{prefix}/readiness-probe`: never written; asking for it shows the store answers.
    ReadinessProbe,
}

impl ObjectKey<'_> {
    fn path(&self, prefix: &Path) -> Path {
        let index;
        let parts: &[&str] = match self {
            ObjectKey::Blob { tenant_id, digest } => &["tenants", tenant_id, "blobs", "sha256", digest.as_hex()],
            ObjectKey::Staging { tenant_id, upload_id } => &["tenants", tenant_id, "staging", upload_id, "data"],
            ObjectKey::Chunk { tenant_id, session_id, index: i } => {
                index = format!("{i:010}");
                &["tenants", tenant_id, "sessions", session_id, &index]
            }
            ObjectKey::Assembled { tenant_id, session_id } => {
                &["tenants", tenant_id, "sessions", session_id, "assembled"]
            }
            ObjectKey::StagingFolder { tenant_id } => &["tenants", tenant_id, "staging"],
            ObjectKey::SessionFolder { tenant_id, session_id } => &["tenants", tenant_id, "sessions", session_id],
            ObjectKey::ReadinessProbe => &["readiness-probe"],
        };
        parts.iter().fold(prefix.clone(), |path, part| path.join(*part))
    }
}

/// Bytes written under a staging key, with what they hash to.
#[derive(Debug)]
pub struct Staged {
    path: Path,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Present where the store can presign URLs (S3, Azure, GCS).
    signer: Option<Arc<dyn Signer>>,
    /// Present where the store has multipart uploads a resumable session can keep its parts in.
    multipart: Option<Arc<dyn MultipartStore>>,
    /// Headers a client must send with a presigned PUT (Azure wants the blob type).
    put_headers: Vec<(String, String)>,
    prefix: Path,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("store", &self.store)
            .field("signs", &self.signer.is_some())
            .field("multipart", &self.multipart.is_some())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A URL a client can use without credentials, and the headers it must send with it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SignedRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: BTreeMap<String, String>,
}

impl Storage {
    pub fn open(config: &StorageConfig) -> Result<Self> {
        let Opened { store, signer, multipart, prefix } = open_store(config)?;
        let store: Arc<dyn ObjectStore> = Arc::new(instrumented::Instrumented(store));
        let put_headers = if config.url.starts_with("az") {
            vec![("x-ms-blob-type".to_owned(), "BlockBlob".to_owned())]
        } else {
            Vec::new()
        };
        Ok(Self { store, signer, multipart, put_headers, prefix })
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    async fn sign(
        &self,
        method: object_store::signer::Method,
        path: &Path,
        expires_in: std::time::Duration,
    ) -> Result<Option<SignedRequest>> {
        let Some(signer) = &self.signer else { return Ok(None) };
        let url = signer.signed_url(method.clone(), path, expires_in).await?;
        let headers = if method == object_store::signer::Method::PUT {
            self.put_headers.iter().cloned().collect()
        } else {
            BTreeMap::new()
        };
        Ok(Some(SignedRequest {
            method: if method == object_store::signer::Method::PUT { "PUT" } else { "GET" },
            url: url.to_string(),
            headers,
        }))
    }

    /// A presigned GET of a blob.
    pub async fn sign_blob_get(
        &self,
        tenant_id: &str,
        digest: &Digest,
        expires_in: std::time::Duration,
    ) -> Result<Option<SignedRequest>> {
        self.sign(object_store::signer::Method::GET, &self.blob_path(tenant_id, digest), expires_in).await
    }

    /// The underlying store, for roles (the runner) that read objects by [`Storage::blob_path`].
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub fn blob_path(&self, tenant_id: &str, digest: &Digest) -> Path {
        ObjectKey::Blob { tenant_id, digest }.path(&self.prefix)
    }

    /// Moves staged bytes to their content address in the tenant's blob space.
    pub async fn promote(&self, tenant_id: &str, staged: &Staged) -> Result<()> {
        let target = self.blob_path(tenant_id, &staged.digest);
        self.store.rename(&staged.path, &target).await?;
        Ok(())
    }

    /// Whether the tenant's blob of `digest` is in the store.
    pub async fn blob_exists(&self, tenant_id: &str, digest: &Digest) -> Result<bool> {
        match self.store.head(&self.blob_path(tenant_id, digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops staged bytes that will not be kept (digest mismatch, already stored).
    pub async fn discard(&self, staged: &Staged) {
        if let Err(e) = self.store.delete(&staged.path).await {
            tracing::warn!(error = %e, object = %staged.path, "deleting a staged upload failed; GC will retry");
        }
    }

    pub async fn get_blob(&self, tenant_id: &str, digest: &Digest) -> Result<object_store::GetResult> {
        Ok(self.store.get(&self.blob_path(tenant_id, digest)).await?)
    }

    /// The bytes of `range` (an explicit, non-empty range inside the blob: every store supports
    /// that, while Azure refuses suffix ranges).
    pub async fn get_blob_range(
        &self,
        tenant_id: &str,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<object_store::GetResult> {
        let options =
            object_store::GetOptions { range: Some(object_store::GetRange::Bounded(range)), ..Default::default() };
        Ok(self.store.get_opts(&self.blob_path(tenant_id, digest), options).await?)
    }

    pub async fn read_blob_range(
        &self,
        tenant_id: &str,
        digest: &Digest,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        Ok(self.store.get_range(&self.blob_path(tenant_id, digest), range).await?)
    }

    /// Deletes a blob's object; a blob already gone is not an error.
    pub async fn delete_blob(&self, tenant_id: &str, digest: &Digest) -> Result<()> {
        self.delete_if_present(&self.blob_path(tenant_id, digest)).await
    }

    async fn delete_if_present(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the tenant's staged uploads last written before `cutoff_ms` (ones a crash or a
    /// dropped connection left behind); returns how many.
    pub async fn delete_stale_staging(&self, tenant_id: &str, cutoff_ms: i64) -> Result<u64> {
        let folder = ObjectKey::StagingFolder { tenant_id }.path(&self.prefix);
        let stale: Vec<Path> = self
            .store
            .list(Some(&folder))
            .try_filter(|meta| futures::future::ready(meta.last_modified.timestamp_millis() < cutoff_ms))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for location in &stale {
            self.delete_if_present(location).await?;
        }
        Ok(stale.len() as u64)
    }

    /// Whether the store answers at all (a missing object is an answer).
    pub async fn check(&self) -> Result<()> {
        let probe = ObjectKey::ReadinessProbe.path(&self.prefix);
        match self.store.head(&probe).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

struct Opened {
    store: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: Path,
}

fn open_store(config: &StorageConfig) -> Result<Opened> {
    let bad = |m: String| Error::StorageConfig(m);
    let url = url::Url::parse(&config.url).map_err(|e| bad(format!("storage URL {:?}: {e}", config.url)))?;
    // In `s3://bucket/prefix` the host is the bucket (or container); the path is our prefix.
    let prefix = Path::from_url_path(url.path()).map_err(|e| bad(format!("storage URL path: {e}")))?;
    let opened =
        |store: Arc<dyn ObjectStore>, signer, multipart| Opened { store, signer, multipart, prefix: prefix.clone() };
    Ok(match url.scheme() {
        "file" => {
            let dir = url.to_file_path().map_err(|()| bad(format!("{:?} is not a local path", config.url)))?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io("creating the blob folder", e))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
            Opened { store: Arc::new(fs), signer: None, multipart: None, prefix: Path::default() }
        }
        "memory" => {
            let memory = Arc::new(object_store::memory::InMemory::new());
            opened(memory.clone(), None, Some(memory))
        }
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut b = AmazonS3Builder::from_env().with_url(config.url.as_str());
            if let Some(endpoint) = &config.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            for (k, v) in &config.options {
                let key: AmazonS3ConfigKey = k.parse().map_err(|_| bad(format!("unknown S3 option {k:?}")))?;
                b = b.with_config(key, v);
            }
            let s3 = Arc::new(b.with_retry(config.retry()).build()?);
            opened(s3.clone(), Some(s3.clone()), Some(s3))
        }
        "az" | "azure" | "abfs" | "abfss" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut b = MicrosoftAzureBuilder::from_env().with_url(config.url.as_str());
            for (k, v) in &config.options {
                let key: AzureConfigKey = k.parse().map_err(|_| bad(format!("unknown Azure option {k:?}")))?;
                b = b.with_config(key, v);
            }
            if let Some(endpoint) = &config.endpoint {
                b = b.with_endpoint(endpoint.clone()).with_allow_http(endpoint.starts_with("http://"));
            }
            let azure = Arc::new(b.with_retry(config.retry()).build()?);
            opened(azure.clone(), Some(azure.clone()), Some(azure))
        }
        "gs" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(config.url.as_str());
            for (k, v) in &config.options {
                let key: GoogleConfigKey = k.parse().map_err(|_| bad(format!("unknown GCS option {k:?}")))?;
                b = b.with_config(key, v);
            }
            let gcs = Arc::new(b.with_retry(config.retry()).build()?);
            opened(gcs.clone(), Some(gcs.clone()), Some(gcs))
        }
        other => {
            return Err(bad(format!(
                "unsupported storage scheme {other:?}: use file://, memory://, s3://, gs:// or az://"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str, options: &[(&str, &str)]) -> Result<Storage> {
        let options = options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Storage::open(&StorageConfig { url: url.into(), options, ..StorageConfig::default() })
    }

    fn digest() -> Digest {
        Digest::parse(&"ab".repeat(32)).expect("a digest")
    }

    #[test]
    fn blob_keys_are_per_tenant_under_the_url_prefix_on_every_cloud() {
        let cases = [
            ("memory:///", vec![]),
            ("s3://bucket/some/prefix", vec![("aws_region", "eu-west-1")]),
            (
                "az://container/some/prefix",
                vec![("azure_storage_account_name", "acct"), ("azure_storage_account_key", "a2V5")],
            ),
            ("gs://bucket/some/prefix", vec![]),
        ];
        for (url, options) in cases {
            let storage = open(url, &options).unwrap_or_else(|e| panic!("{url}: {e}"));
            let want = if url.starts_with("memory") { String::new() } else { "some/prefix/".into() };
            assert_eq!(
                storage.blob_path("t1", &digest()).to_string(),
                format!("{want}tenants/t1/blobs/sha256/{}", "ab".repeat(32)),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_storage_settings_fail_with_a_clear_message() {
        let message =
            |url: &str, options: &[(&str, &str)]| open(url, options).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message("ftp://host/x", &[]).contains("unsupported storage scheme"));
        assert!(message("s3://bucket", &[("aws_regio", "x")]).contains("unknown S3 option \"aws_regio\""));
        assert!(message("gs://bucket", &[("google_nonsense", "x")]).contains("unknown GCS option"));
        assert!(message("not a url", &[]).contains("storage URL"));
    }
}
