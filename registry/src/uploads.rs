//! Resumable uploads: a file of a draft declared up front (path, size, sha256), sent in
//! fixed-size chunks in any order or in parallel, over as many connections as it takes.
//! The session's state is in the database and its chunks are parts of the object store's own
//! multipart upload (S3, Azure, GCS), or objects of their own on a store without one (a local
//! folder), so a dropped connection or a gateway restart loses at most the chunk in flight.
//! Completing assembles the parts, checks size and sha256, and records the file as a plain
//! upload does. A session for content the tenant already stores completes when it starts.
//! Sessions expire; garbage collection aborts and deletes what expired ones left.
//! An open session holds its declared size against the tenant's storage quota (it counts as
//! used from its start to its end), and completing checks the quota again.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _};
use serde::Serialize;
use sqlx::Row as _;

use crate::db::{new_id, now_ms};
use crate::files::{Content, lock_tenant, quota_room, touch_blob};
use crate::models::Model;
use crate::names::{Digest, FilePath};
use crate::page::{Page, PageRequest};
use crate::storage::hash_stream;
use crate::versions::{VersionFile, VersionStatus};
use crate::{Actor, Error, Registry, Result};

pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;
/// S3 wants at least 5 MiB in every part of a multipart upload but the last.
pub const MIN_CHUNK_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_CHUNK_SIZE: u64 = 64 * 1024 * 1024;
/// S3 takes at most 10,000 parts in a multipart upload.
pub const MAX_CHUNKS: u64 = 10_000;
/// A presigned upload is one PUT; S3 takes at most 5 GiB in one.
pub const MAX_PRESIGNED_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// What a client declares when it opens a session.
pub struct NewUpload<'a> {
    pub path: &'a FilePath,
    pub size: u64,
    pub sha256: &'a Digest,
    pub chunk_size: Option<u64>,
    pub expires_in: Duration,
    /// Send the bytes straight to the bucket through a presigned URL (S3, Azure, GCS).
    pub presigned: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UploadSession {
    pub id: String,
    pub path: FilePath,
    pub size: u64,
    pub sha256: Digest,
    pub chunk_size: u64,
    /// How many chunks make the file; chunk `i` covers bytes `i * chunk_size ..`.
    pub chunks: u64,
    /// Indices of the chunks the server has.
    pub received: Vec<u64>,
    pub presigned: bool,
    /// For a presigned session: the request that puts the whole file into the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<crate::storage::SignedRequest>,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: i64,
    #[serde(skip)]
    version_id: String,
    /// The store's multipart upload holding the chunks, where the store has them.
    #[serde(skip)]
    multipart_id: Option<String>,
}

/// What starting a session answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Started {
    /// Send the chunks (or PUT the presigned URL), then complete.
    Open(UploadSession),
    /// The tenant stores this content already: the file is recorded, nothing is to be sent.
    Complete { file: VersionFile },
}

impl UploadSession {
    /// Bytes chunk `index` must hold.
    fn chunk_len(&self, index: u64) -> u64 {
        self.chunk_size.min(self.size - index * self.chunk_size)
    }
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Invalid("number too large".into()))
}

impl Registry {
    /// Opens a session for one file of a draft version, or records the file at once when the
    /// tenant already stores content of that digest and size.
    pub async fn start_upload(&self, actor: &Actor, model: &Model, number: i64, new: NewUpload<'_>) -> Result<Started> {
        let NewUpload { path, size, sha256, chunk_size, expires_in, presigned } = new;
        let version = self.version(model, number).await?;
        if version.status != VersionStatus::Draft {
            return Err(Error::Conflict(format!(
                "version {}@{number} is not a draft; uploads go into drafts",
                model.name
            )));
        }
        if size == 0 {
            return Err(Error::Invalid(
                "a resumable upload needs a size of at least 1 byte; send empty files in one PUT".into(),
            ));
        }
        let chunk_size = if presigned {
            if !self.storage.can_sign() {
                return Err(Error::Invalid("this object store cannot presign URLs; use a chunked session".into()));
            }
            if size > MAX_PRESIGNED_SIZE {
                return Err(Error::Invalid(format!(
                    "a presigned upload takes at most {MAX_PRESIGNED_SIZE} bytes; use a chunked session"
                )));
            }
            size
        } else {
            let chunk_size =
                chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE.max(size.div_ceil(MAX_CHUNKS).next_power_of_two()));
            if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
                return Err(Error::Invalid(format!(
                    "chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
                )));
            }
            if size.div_ceil(chunk_size) > MAX_CHUNKS {
                return Err(Error::Invalid(format!(
                    "a session takes at most {MAX_CHUNKS} chunks: this file needs a chunk_size of at least {} bytes",
                    size.div_ceil(MAX_CHUNKS)
                )));
            }
            chunk_size
        };
        match self.blob_size(&model.tenant_id, sha256).await? {
            Some(stored) if stored == size => {
                let content = Content::Stored { digest: sha256.clone(), size };
                let file = self.record_file(actor, model, &version, path, content, None).await?;
                return Ok(Started::Complete { file });
            }
            Some(stored) => {
                return Err(Error::Invalid(format!(
                    "size {size} does not match the {stored} bytes of the content with sha256 {sha256}"
                )));
            }
            None => {}
        }
        self.check_quota(&model.tenant_id, size, Some(sha256)).await?;
        let id = new_id();
        let multipart_id = match (presigned, self.storage.has_multipart()) {
            (false, true) => Some(self.storage.start_parts(&model.tenant_id, &id).await?),
            _ => None,
        };
        let (now, expires_at) = (now_ms(), now_ms().saturating_add(to_i64(expires_in.as_millis() as u64)?));
        // The session keeps GC off the blob it will write (gc.rs); touching the blob's row orders
        // the two should this content be stored, and be collected, right now.
        let mut tx = self.db.begin().await?;
        let reserved = async {
            touch_blob(&mut tx, &model.tenant_id, sha256, now).await?;
            // The session reserves its size against the quota until it ends: checked again under
            // the tenant's lock, so sessions started side by side cannot share the same room.
            lock_tenant(&mut tx, &model.tenant_id).await?;
            quota_room(&mut tx, &model.tenant_id, size, None).await
        }
        .await;
        if let Err(e) = reserved {
            drop(tx);
            if multipart_id.is_some() {
                self.storage.delete_session(&model.tenant_id, &id, multipart_id.as_deref()).await?;
            }
            return Err(e);
        }
        sqlx::query(
            "INSERT INTO upload_sessions (id, tenant_id, version_id, path, size, sha256, chunk_size, created_by,
             created_at, expires_at, presigned, multipart_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(&model.tenant_id)
        .bind(&version.id)
        .bind(path.as_str())
        .bind(to_i64(size)?)
        .bind(sha256.as_hex())
        .bind(to_i64(chunk_size)?)
        .bind(&actor.key_id)
        .bind(now)
        .bind(expires_at)
        .bind(i64::from(presigned))
        .bind(&multipart_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut session = self.upload_session(model, &id).await?;
        if presigned {
            session.upload = self.storage.sign_chunk_put(&model.tenant_id, &id, expires_in).await?;
        }
        Ok(Started::Open(session))
    }

    /// The live sessions of a draft, oldest first: how a client that lost track of its sessions
    /// (another machine, a wiped cache) finds one to resume.
    pub async fn list_uploads(&self, model: &Model, number: i64, page: &PageRequest) -> Result<Page<UploadSession>> {
        let version = self.version(model, number).await?;
        let ids = sqlx::query(
            "SELECT id FROM upload_sessions WHERE version_id = $1 AND expires_at > $2 AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(&version.id)
        .bind(now_ms())
        .bind(page.after.as_deref().unwrap_or(""))
        .bind(page.fetch())
        .fetch_all(self.db.pool())
        .await?;
        let mut sessions = Vec::with_capacity(ids.len());
        for row in &ids {
            match self.upload_session(model, &row.try_get::<String, _>("id")?).await {
                Ok(session) => sessions.push(session),
                // Completed or expired since the query.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Page::new(sessions, page, |s| s.id.clone()))
    }

    /// A live session of the model's tenant; another tenant's or an expired one is "not found".
    pub async fn upload_session(&self, model: &Model, id: &str) -> Result<UploadSession> {
        let row = sqlx::query(
            "SELECT s.id, s.version_id, s.path, s.size, s.sha256, s.chunk_size, s.expires_at, s.presigned, s.multipart_id
             FROM upload_sessions s
             JOIN model_versions v ON v.id = s.version_id
             WHERE s.id = $1 AND s.tenant_id = $2 AND v.model_id = $3 AND s.expires_at > $4",
        )
        .bind(id)
        .bind(&model.tenant_id)
        .bind(&model.id)
        .bind(now_ms())
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| Error::not_found("upload session", id))?;
        let size = u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0);
        let chunk_size = u64::try_from(row.try_get::<i64, _>("chunk_size")?).unwrap_or(DEFAULT_CHUNK_SIZE).max(1);
        let presigned = row.try_get::<i64, _>("presigned")? != 0;
        let received = if presigned {
            // The client wrote straight to the bucket: the object tells whether it arrived whole.
            match self.storage.chunk_size(&model.tenant_id, id, 0).await? {
                Some(stored) if stored == size => vec![0],
                _ => Vec::new(),
            }
        } else {
            sqlx::query("SELECT idx FROM upload_chunks WHERE session_id = $1 ORDER BY idx")
                .bind(id)
                .fetch_all(self.db.pool())
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>("idx").map(|i| u64::try_from(i).unwrap_or(0)))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(UploadSession {
            id: row.try_get("id")?,
            path: FilePath::parse(&row.try_get::<String, _>("path")?)?,
            size,
            sha256: Digest::parse(&row.try_get::<String, _>("sha256")?)?,
            chunk_size,
            chunks: size.div_ceil(chunk_size),
            received,
            presigned,
            upload: None,
            expires_at: row.try_get("expires_at")?,
            version_id: row.try_get("version_id")?,
            multipart_id: row.try_get("multipart_id")?,
        })
    }

    /// Stores chunk `index` (sent again, it replaces the earlier copy).
    pub async fn put_chunk<S, E>(&self, model: &Model, id: &str, index: u64, body: S) -> Result<UploadSession>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let session = self.upload_session(model, id).await?;
        if session.presigned {
            return Err(Error::Conflict("this session is presigned: PUT the file to its URL, then complete".into()));
        }
        if index >= session.chunks {
            return Err(Error::Invalid(format!("chunk {index} is past the last chunk ({})", session.chunks - 1)));
        }
        let expected = session.chunk_len(index);
        let mut body = body;
        let mut bytes = BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0));
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| Error::Upload(Box::new(e)))?;
            if (bytes.len() + piece.len()) as u64 > expected {
                return Err(Error::Invalid(format!("chunk {index} must be {expected} bytes; more were sent")));
            }
            bytes.extend_from_slice(&piece);
        }
        if bytes.len() as u64 != expected {
            return Err(Error::Invalid(format!("chunk {index} must be {expected} bytes; {} were sent", bytes.len())));
        }
        let part_id = match &session.multipart_id {
            Some(upload) => Some(self.storage.put_part(&model.tenant_id, id, upload, index, bytes.freeze()).await?),
            None => {
                self.storage.put_chunk(&model.tenant_id, id, index, bytes.freeze()).await?;
                None
            }
        };
        sqlx::query(
            "INSERT INTO upload_chunks (session_id, idx, size, part_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (session_id, idx) DO UPDATE SET part_id = excluded.part_id",
        )
        .bind(id)
        .bind(to_i64(index)?)
        .bind(to_i64(expected)?)
        .bind(part_id)
        .execute(self.db.pool())
        .await?;
        self.upload_session(model, id).await
    }

    /// Assembles the chunks, checks size and sha256, and records the file in its draft. Bytes
    /// that do not match what the session declared end the session.
    pub async fn complete_upload(&self, actor: &Actor, model: &Model, id: &str) -> Result<VersionFile> {
        let session = self.upload_session(model, id).await?;
        let missing: Vec<u64> = (0..session.chunks).filter(|i| !session.received.contains(i)).collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(20).map(u64::to_string).collect();
            return Err(Error::Conflict(format!("{} chunks are missing: {}", missing.len(), shown.join(", "))));
        }
        let version = self.version_by_id(model, &session.version_id).await?;
        let tenant_id = model.tenant_id.as_str();
        // The session reserved its size when it started; the quota may have been lowered since,
        // or the session opened before reservations counted. Checked before any byte moves.
        if self.blob_size(tenant_id, &session.sha256).await?.is_none() {
            let mut tx = self.db.begin().await?;
            lock_tenant(&mut tx, tenant_id).await?;
            quota_room(&mut tx, tenant_id, session.size, Some(id)).await?;
            tx.commit().await?;
        }
        let mismatch = |actual: &Digest, size: u64| {
            if *actual != session.sha256 || size != session.size {
                Err(Error::DigestMismatch { declared: session.sha256.to_string(), actual: actual.to_string() })
            } else {
                Ok(())
            }
        };
        let checked = async {
            match &session.multipart_id {
                Some(upload) => {
                    let parts = self.part_ids(id).await?;
                    self.storage.assemble_parts(tenant_id, id, upload, parts, session.size).await?;
                    let (actual, size) = hash_stream(self.storage.assembled(tenant_id, id).await?).await?;
                    mismatch(&actual, size)?;
                    Ok(Content::Assembled { session_id: id.to_owned(), digest: actual, size })
                }
                None => {
                    let chunks = self.storage.chunks(tenant_id, id, session.chunks);
                    let size = self.storage.write_blob(tenant_id, &session.sha256, chunks, None).await?;
                    mismatch(&session.sha256, size)?;
                    Ok(Content::Stored { digest: session.sha256.clone(), size })
                }
            }
        }
        .await;
        let content = match checked {
            Ok(content) => content,
            Err(e @ Error::DigestMismatch { .. }) => {
                self.end_session(tenant_id, id, session.multipart_id.as_deref()).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let file = self.record_file(actor, model, &version, &session.path, content, None).await?;
        self.end_session(tenant_id, id, None).await?;
        Ok(file)
    }

    /// The store's ids of a session's parts, in order.
    async fn part_ids(&self, id: &str) -> Result<Vec<String>> {
        sqlx::query("SELECT part_id FROM upload_chunks WHERE session_id = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|r| {
                r.try_get::<Option<String>, _>("part_id")?
                    .ok_or_else(|| Error::Conflict("a chunk of this session was stored without a part id".into()))
            })
            .collect()
    }

    pub async fn abort_upload(&self, model: &Model, id: &str) -> Result<()> {
        let session = self.upload_session(model, id).await?;
        self.end_session(&model.tenant_id, id, session.multipart_id.as_deref()).await
    }

    /// Deletes what the session stored (aborting its multipart upload, when one is still open)
    /// and its rows.
    async fn end_session(&self, tenant_id: &str, id: &str, open_multipart: Option<&str>) -> Result<()> {
        self.storage.delete_session(tenant_id, id, open_multipart).await?;
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM upload_chunks WHERE session_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM upload_sessions WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every session past its expiry, chunks included; returns how many.
    pub(crate) async fn expire_upload_sessions(&self) -> Result<u64> {
        let expired = sqlx::query("SELECT id, tenant_id, multipart_id FROM upload_sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .fetch_all(self.db.pool())
            .await?;
        for row in &expired {
            let multipart_id: Option<String> = row.try_get("multipart_id")?;
            let (tenant_id, id): (String, String) = (row.try_get("tenant_id")?, row.try_get("id")?);
            self.end_session(&tenant_id, &id, multipart_id.as_deref()).await?;
        }
        Ok(expired.len() as u64)
    }
}
