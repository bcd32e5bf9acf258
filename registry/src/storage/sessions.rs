//! Resumable sessions' bytes: parts of the store's own multipart upload (S3, Azure, GCS), or,
//! on a store without one, chunks as objects of their own; and a presigned PUT's target.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};

use super::{ObjectKey, SignedRequest, Storage};
use crate::names::Digest;
use crate::{Error, Result};

impl Storage {
    /// A presigned PUT of a whole file into chunk 0 of a session.
    pub async fn sign_chunk_put(
        &self,
        tenant_id: &str,
        session_id: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<SignedRequest>> {
        let path = ObjectKey::Chunk { tenant_id, session_id, index: 0 }.path(&self.prefix);
        self.sign(object_store::signer::Method::PUT, &path, expires_in).await
    }

    /// The size of a session's chunk, if it is stored.
    pub async fn chunk_size(&self, tenant_id: &str, session_id: &str, index: u64) -> Result<Option<u64>> {
        let path = ObjectKey::Chunk { tenant_id, session_id, index }.path(&self.prefix);
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether resumable sessions keep their parts in the store's own multipart upload.
    pub fn has_multipart(&self) -> bool {
        self.multipart.is_some()
    }

    fn multipart(&self) -> Result<&Arc<dyn MultipartStore>> {
        self.multipart.as_ref().ok_or_else(|| Error::StorageConfig("this store has no multipart uploads".into()))
    }

    /// Opens the multipart upload a session's parts go into; answers its id.
    pub async fn start_parts(&self, tenant_id: &str, session_id: &str) -> Result<String> {
        let path = ObjectKey::Assembled { tenant_id, session_id }.path(&self.prefix);
        Ok(self.multipart()?.create_multipart(&path).await?)
    }

    /// Stores part `index` of a session's multipart upload; answers the store's id of the part.
    pub async fn put_part(
        &self,
        tenant_id: &str,
        session_id: &str,
        upload_id: &str,
        index: u64,
        bytes: Bytes,
    ) -> Result<String> {
        let path = ObjectKey::Assembled { tenant_id, session_id }.path(&self.prefix);
        let index = usize::try_from(index).map_err(|_| Error::Invalid("part index too large".into()))?;
        let upload_id = upload_id.to_owned();
        Ok(self.multipart()?.put_part(&path, &upload_id, index, PutPayload::from(bytes)).await?.content_id)
    }

    /// Completes a session's multipart upload (parts in order) into its assembled object. Done
    /// already (a retry after a crash), it changes nothing.
    pub async fn assemble_parts(
        &self,
        tenant_id: &str,
        session_id: &str,
        upload_id: &str,
        parts: Vec<String>,
        size: u64,
    ) -> Result<()> {
        let path = ObjectKey::Assembled { tenant_id, session_id }.path(&self.prefix);
        match self.store.head(&path).await {
            Ok(meta) if meta.size == size => return Ok(()),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let parts = parts.into_iter().map(|content_id| PartId { content_id }).collect();
        self.multipart()?.complete_multipart(&path, &upload_id.to_owned(), parts).await?;
        Ok(())
    }

    /// The bytes of a session's assembled object.
    pub async fn assembled(
        &self,
        tenant_id: &str,
        session_id: &str,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Unpin + use<>> {
        let path = ObjectKey::Assembled { tenant_id, session_id }.path(&self.prefix);
        Ok(self.store.get(&path).await?.into_stream().map(|r| r.map_err(Error::from)))
    }

    /// Moves a session's assembled object, whose digest was checked, to its content address.
    pub async fn promote_assembled(&self, tenant_id: &str, session_id: &str, digest: &Digest) -> Result<()> {
        let path = ObjectKey::Assembled { tenant_id, session_id }.path(&self.prefix);
        self.store.rename(&path, &self.blob_path(tenant_id, digest)).await?;
        Ok(())
    }

    /// Stores one chunk of a resumable upload (a chunk is at most a few MiB; it is sent whole).
    pub async fn put_chunk(&self, tenant_id: &str, session_id: &str, index: u64, bytes: Bytes) -> Result<()> {
        let path = ObjectKey::Chunk { tenant_id, session_id, index }.path(&self.prefix);
        self.store.put(&path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// The chunks `0..count` of a session, as one stream of bytes in order.
    pub fn chunks(
        &self,
        tenant_id: &str,
        session_id: &str,
        count: u64,
    ) -> impl Stream<Item = Result<Bytes>> + Unpin + use<> {
        let store = self.store.clone();
        let paths: Vec<Path> =
            (0..count).map(|index| ObjectKey::Chunk { tenant_id, session_id, index }.path(&self.prefix)).collect();
        Box::pin(
            futures::stream::iter(paths)
                .then(move |path| {
                    let store = store.clone();
                    async move { Ok::<_, Error>(store.get(&path).await?.into_stream().map(|r| r.map_err(Error::from))) }
                })
                .try_flatten(),
        )
    }

    /// Deletes what a session stored: its multipart upload, chunks and assembled object.
    /// (Azure cannot delete a multipart upload's blocks; it drops them after a week.)
    pub async fn delete_session(&self, tenant_id: &str, session_id: &str, upload_id: Option<&str>) -> Result<()> {
        if let (Some(multipart), Some(upload_id)) = (&self.multipart, upload_id) {
            let path = ObjectKey::Assembled { tenant_id, session_id }.path(&self.prefix);
            match multipart.abort_multipart(&path, &upload_id.to_owned()).await {
                // Completed or aborted already, or unknown to a store that forgets finished uploads.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(error = %e, session.id = session_id, "aborting a multipart upload failed"),
            }
        }
        let folder = ObjectKey::SessionFolder { tenant_id, session_id }.path(&self.prefix);
        let chunks: Vec<Path> = self.store.list(Some(&folder)).map_ok(|meta| meta.location).try_collect().await?;
        for path in &chunks {
            self.delete_if_present(path).await?;
        }
        Ok(())
    }
}
