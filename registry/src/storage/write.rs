//! Writing uploads: streamed to the store while a background thread hashes them, in one PUT
//! when small and as a multipart upload otherwise, with bounded memory.

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use super::{ObjectKey, Staged, Storage};
use crate::names::Digest;
use crate::{Error, Result};

/// Parts of a multipart upload; S3 needs at least 5 MiB for every part but the last.
pub(super) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per upload; with [`PART_SIZE`] this bounds an upload's memory to ~40 MiB.
const PARTS_IN_FLIGHT: usize = 4;

impl Storage {
    /// Streams `body` to a staging object while hashing it. Memory stays bounded by
    /// the part size times the parts in flight, whatever the size of the body. A body
    /// longer than `max_bytes` is cut off and nothing is kept.
    pub async fn stage<S, E>(&self, tenant_id: &str, body: S, max_bytes: Option<u64>) -> Result<Staged>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let upload_id = crate::db::new_id();
        let path = ObjectKey::Staging { tenant_id, upload_id: &upload_id }.path(&self.prefix);
        let (digest, size) = self.write(&path, body, max_bytes, None).await?;
        Ok(Staged { path, digest, size })
    }

    /// Streams `body` straight to the blob `digest` names, and returns its size. The object
    /// appears only if the bytes hash to `digest` (the hash is known before the upload is
    /// completed, and a mismatch aborts it), so a content address never holds other bytes,
    /// even for a moment; an equal blob already there is replaced by the same bytes.
    pub async fn write_blob<S, E>(
        &self,
        tenant_id: &str,
        digest: &Digest,
        body: S,
        max_bytes: Option<u64>,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let path = self.blob_path(tenant_id, digest);
        Ok(self.write(&path, body, max_bytes, Some(digest)).await?.1)
    }

    async fn write<S, E>(
        &self,
        path: &Path,
        mut body: S,
        max_bytes: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let hasher = BackgroundHasher::start();
        let mut size: u64 = 0;
        let mut first = Vec::new();
        let over = |size: u64| match max_bytes {
            Some(max) if size > max => {
                Err(Error::QuotaExceeded(format!("the upload is larger than the {max} bytes left")))
            }
            _ => Ok(()),
        };
        let verified = |digest: Digest| match expected {
            Some(expected) if *expected != digest => {
                Err(Error::DigestMismatch { declared: expected.to_string(), actual: digest.to_string() })
            }
            _ => Ok(digest),
        };
        // Small bodies go up in one request; a body larger than one part switches to multipart.
        while first.len() < PART_SIZE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| Error::Upload(Box::new(e)))?;
                    size += chunk.len() as u64;
                    over(size)?;
                    first.extend_from_slice(&chunk);
                    hasher.update(chunk).await;
                }
                None => {
                    let digest = verified(hasher.finish().await?)?;
                    self.store.put(path, PutPayload::from(first)).await?;
                    return Ok((digest, size));
                }
            }
        }
        let mut writer = WriteMultipart::new_with_chunk_size(self.store.put_multipart(path).await?, PART_SIZE);
        writer.put(Bytes::from(first));
        let streamed: Result<Digest> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Upload(Box::new(e)))?;
                size += chunk.len() as u64;
                over(size)?;
                hasher.update(chunk.clone()).await;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.put(chunk);
            }
            verified(hasher.finish().await?)
        }
        .await;
        match streamed {
            Ok(digest) => {
                writer.finish().await?;
                Ok((digest, size))
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "aborting a failed multipart upload failed");
                }
                Err(e)
            }
        }
    }
}

/// sha256 on a thread of its own, so that hashing an upload overlaps receiving and storing it
/// (with SHA-NI one core hashes ~1.5 GB/s: a fifth of a 2 GiB upload's time on the request's
/// thread). The queue between them holds a few chunks, so memory stays bounded.
struct BackgroundHasher {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    digest: tokio::task::JoinHandle<Digest>,
}

impl BackgroundHasher {
    fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let digest = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
            }
            finish(hasher)
        });
        Self { chunks: tx, digest }
    }

    async fn update(&self, chunk: Bytes) {
        // The receiver lives until `finish`; a send fails only if the thread panicked, which
        // `finish` reports.
        let _ = self.chunks.send(chunk).await;
    }

    async fn finish(self) -> Result<Digest> {
        let Self { chunks, digest } = self;
        drop(chunks);
        digest.await.map_err(|e| Error::Io("hashing the upload", std::io::Error::other(e)))
    }
}

/// What `body` hashes to, and its length, storing nothing.
pub async fn hash_stream<S, E>(mut body: S) -> Result<(Digest, u64)>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Upload(Box::new(e)))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((finish(hasher), size))
}

fn finish(hasher: Sha256) -> Digest {
    Digest::from_bytes(&hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageConfig;

    fn memory() -> Storage {
        Storage::open(&StorageConfig { url: "memory:///".into(), ..StorageConfig::default() }).expect("memory store")
    }

    #[tokio::test]
    async fn staging_hashes_what_it_stores_small_and_multipart() {
        let storage = memory();
        for size in [0usize, 1000, PART_SIZE * 2 + 123] {
            let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let chunks: Vec<Result<Bytes, std::io::Error>> =
                bytes.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
            let staged = storage.stage("t1", futures::stream::iter(chunks), None).await.expect("staged");
            assert_eq!(staged.size, size as u64);
            assert_eq!(staged.digest.as_hex(), hex::encode(Sha256::digest(&bytes)));
            storage.promote("t1", &staged).await.expect("promoted");
            let stored = storage.get_blob("t1", &staged.digest).await.expect("stored").bytes().await.expect("bytes");
            assert!(stored.as_ref() == bytes.as_slice(), "{size} bytes round trip");
            assert!(storage.get_blob("t2", &staged.digest).await.is_err(), "another tenant's space does not hold it");
        }
    }

    #[tokio::test]
    async fn a_broken_body_stores_nothing() {
        let storage = memory();
        let big = Bytes::from(vec![7u8; PART_SIZE + 1]);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(big), Err(std::io::Error::other("client went away"))];
        let result = storage.stage("t1", futures::stream::iter(chunks), None).await;
        assert!(matches!(result, Err(Error::Upload(_))), "{result:?}");
        let listed: Vec<_> = futures::TryStreamExt::try_collect(storage.store.list(None)).await.expect("list");
        assert!(listed.is_empty(), "an aborted upload leaves no object: {listed:?}");
        for size in [100, PART_SIZE * 2] {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(vec![1u8; size]))];
            let result = storage.stage("t1", futures::stream::iter(chunks), Some(99)).await;
            assert!(matches!(result, Err(Error::QuotaExceeded(_))), "{result:?}");
        }
        let listed: Vec<_> = futures::TryStreamExt::try_collect(storage.store.list(None)).await.expect("list");
        assert!(listed.is_empty(), "a body over the limit leaves no object: {listed:?}");
    }
}
