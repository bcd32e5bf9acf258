//! Files into drafts: streaming an upload into the tenant's blob space, storing each content
//! once per tenant, the storage quota, and recording the file in its draft.
//!
//! An upload whose digest is declared up front (`X-Checksum-Sha256`, every resumable session)
//! writes straight to the blob's content address: the digest is checked before the object is
//! completed, so the address never holds other bytes. While it runs, a row in `blob_uploads`
//! (or the session's row) keeps garbage collection off that blob; see gc.rs for the protocol.
//! An upload without a declared digest goes to a staging object first and is renamed into
//! place once its digest is known.

use bytes::Bytes;
use futures::Stream;
use sqlx::Row as _;

use crate::audit::{self, Entry};
use crate::db::{new_id, now_ms};
use crate::models::Model;
use crate::names::{Digest, FilePath};
use crate::storage::{Staged, hash_stream};
use crate::versions::{Version, VersionFile, ensure_draft, lock_draft, size_i64};
use crate::{Actor, Error, Registry, Result};

/// One file on its way into a draft.
pub struct Upload<'a, S> {
    pub path: &'a FilePath,
    /// The client's sha256 of the bytes (`X-Checksum-Sha256`).
    pub declared: Option<&'a Digest>,
    /// The body's length, when the client sent it.
    pub content_length: Option<u64>,
    pub body: S,
}

/// Where the bytes of a file being recorded are.
pub(crate) enum Content {
    /// Under a staging key, to be moved to the content address if the tenant lacks the blob.
    Staged(Staged),
    /// In a resumable session's assembled object, likewise.
    Assembled { session_id: String, digest: Digest, size: u64 },
    /// At the content address already: written by this upload, or stored before (the blob's
    /// row must then still exist; an intent kept GC away from it).
    Stored { digest: Digest, size: u64 },
}

impl Content {
    fn digest(&self) -> &Digest {
        match self {
            Content::Staged(staged) => &staged.digest,
            Content::Assembled { digest, .. } | Content::Stored { digest, .. } => digest,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Content::Staged(staged) => staged.size,
            Content::Assembled { size, .. } | Content::Stored { size, .. } => *size,
        }
    }
}

impl Registry {
    /// Streams one file of a draft into the tenant's blob space and records it.
    /// If a digest is declared and the bytes hash to something else, nothing is recorded.
    /// With a storage quota, a file that would exceed it is refused before its bytes are
    /// stored (at once when the content length says so, else as soon as the stream passes it);
    /// content the tenant already stores costs nothing and is not stored again.
    pub async fn upload_file<S, E>(
        &self,
        actor: &Actor,
        model: &Model,
        number: i64,
        upload: Upload<'_, S>,
    ) -> Result<VersionFile>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let Upload { path, declared, content_length, body } = upload;
        let version = self.version(model, number).await?;
        ensure_draft(&version, model)?;
        let tenant_id = model.tenant_id.as_str();
        let left = self.check_quota(tenant_id, content_length.unwrap_or(0), declared).await?;
        let Some(digest) = declared else {
            let staged = self.storage.stage(tenant_id, body, left).await?;
            return self.record_file(actor, model, &version, path, Content::Staged(staged), None).await;
        };
        let (intent, known) = self.begin_blob_upload(tenant_id, digest).await?;
        let recorded = async {
            let size = if known {
                let (actual, size) = hash_stream(body).await?;
                if actual != *digest {
                    return Err(Error::DigestMismatch { declared: digest.to_string(), actual: actual.to_string() });
                }
                size
            } else {
                self.storage.write_blob(tenant_id, digest, body, left).await?
            };
            let bytes = Content::Stored { digest: digest.clone(), size };
            self.record_file(actor, model, &version, path, bytes, Some(&intent)).await
        }
        .await;
        if recorded.is_err() {
            self.end_blob_upload(&intent).await;
        }
        recorded
    }

    /// Registers an upload of `digest` that writes to its content address; answers the
    /// intent's id and whether the tenant stores that content already. Touching the blob's row
    /// here, like recording a file does, orders this with a collection of the blob (gc.rs).
    async fn begin_blob_upload(&self, tenant_id: &str, digest: &Digest) -> Result<(String, bool)> {
        let (id, now) = (new_id(), now_ms());
        let mut tx = self.db.begin().await?;
        let known = touch_blob(&mut tx, tenant_id, digest, now).await?;
        sqlx::query("INSERT INTO blob_uploads (id, tenant_id, sha256, started_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(tenant_id)
            .bind(digest.as_hex())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((id, known))
    }

    /// Drops the intent of an upload that failed; a stale one is also dropped by GC.
    async fn end_blob_upload(&self, id: &str) {
        let deleted = sqlx::query("DELETE FROM blob_uploads WHERE id = $1").bind(id).execute(self.db.pool()).await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "dropping an upload intent failed; GC will drop it");
        }
    }

    /// Records `bytes` as `path` of the draft `version`, in one transaction: the blob's row is
    /// touched (or the bytes become the blob), the file row written and audited, and the
    /// upload's intent, if any, ended. Staged bytes are consumed either way.
    pub(crate) async fn record_file(
        &self,
        actor: &Actor,
        model: &Model,
        version: &Version,
        path: &FilePath,
        bytes: Content,
        intent: Option<&str>,
    ) -> Result<VersionFile> {
        let (tenant_id, number) = (model.tenant_id.as_str(), version.number);
        let file = VersionFile { path: path.clone(), digest: bytes.digest().clone(), size: bytes.size() };
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        let recorded: Result<bool> = async {
            lock_draft(&mut tx, &version.id, model, number).await?;
            // Touching the blob's row holds it against garbage collection until this commits
            // (see gc.rs); no row means new content, or content collected meanwhile.
            let new_blob = !touch_blob(&mut tx, tenant_id, &file.digest, now).await?;
            if new_blob {
                // New bytes count against the quota: checked again under the tenant's lock, as
                // uploads running side by side each passed the first check (a session being
                // completed does not count its own reservation). Bytes a direct upload wrote to
                // the content address were bounded by the quota as they streamed.
                let recheck = match &bytes {
                    Content::Staged(_) => Some(None),
                    Content::Assembled { session_id, .. } => Some(Some(session_id.as_str())),
                    Content::Stored { .. } => None,
                };
                if let Some(except_session) = recheck {
                    lock_tenant(&mut tx, tenant_id).await?;
                    quota_room(&mut tx, tenant_id, file.size, except_session).await?;
                }
                // Object first, row second: a crash in between leaves an orphan object, never a
                // row pointing at nothing.
                match &bytes {
                    Content::Staged(staged) => self.storage.promote(tenant_id, staged).await?,
                    Content::Assembled { session_id, digest, .. } => {
                        self.storage.promote_assembled(tenant_id, session_id, digest).await?;
                    }
                    Content::Stored { .. } => {
                        if !self.storage.blob_exists(tenant_id, &file.digest).await? {
                            return Err(Error::Conflict(
                                "the stored content this upload relied on was garbage-collected meanwhile; \
                                 send the file again"
                                    .into(),
                            ));
                        }
                    }
                }
                sqlx::query(
                    "INSERT INTO blobs (tenant_id, sha256, size, created_at, last_used_at) VALUES ($1, $2, $3, $4, $4)
                     ON CONFLICT (tenant_id, sha256) DO UPDATE SET last_used_at = excluded.last_used_at",
                )
                .bind(tenant_id)
                .bind(file.digest.as_hex())
                .bind(size_i64(file.size)?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO version_files (version_id, path, sha256, size, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (version_id, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,
                 created_at = excluded.created_at",
            )
            .bind(&version.id)
            .bind(path.as_str())
            .bind(file.digest.as_hex())
            .bind(size_i64(file.size)?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let Some(intent) = intent {
                sqlx::query("DELETE FROM blob_uploads WHERE id = $1").bind(intent).execute(&mut *tx).await?;
            }
            Ok(new_blob)
        }
        .await;
        let new_blob = match recorded {
            Ok(new_blob) => new_blob,
            Err(e) => {
                drop(tx);
                if let Content::Staged(staged) = &bytes {
                    self.storage.discard(staged).await;
                }
                return Err(e);
            }
        };
        if let (false, Content::Staged(staged)) = (new_blob, &bytes) {
            self.storage.discard(staged).await;
        }
        let before = version.files.iter().find(|f| f.path == *path).and_then(|f| serde_json::to_value(f).ok());
        let target = format!("model/{}/version/{number}/file/{path}", model.name);
        let after = serde_json::to_value(&file).ok();
        audit::record(
            &mut tx,
            actor,
            Entry { tenant_id: Some(tenant_id), action: "version.file.put", target, before, after },
        )
        .await?;
        tx.commit().await?;
        Ok(file)
    }

    /// The size of the tenant's blob of `digest`, if it stores that content.
    pub(crate) async fn blob_size(&self, tenant_id: &str, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE tenant_id = $1 AND sha256 = $2")
            .bind(tenant_id)
            .bind(digest.as_hex())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("size")).transpose()?.map(|s| u64::try_from(s).unwrap_or(0)))
    }

    /// Fails unless `size` more bytes fit the tenant's storage quota (a digest it already
    /// stores costs nothing); returns the bytes left, if there is a quota. Open upload sessions
    /// hold their declared sizes (see [`quota_room`]). A first check, without locks: what
    /// reserves or records bytes checks again under the tenant's lock.
    pub(crate) async fn check_quota(&self, tenant_id: &str, size: u64, digest: Option<&Digest>) -> Result<Option<u64>> {
        if let Some(digest) = digest
            && self.blob_size(tenant_id, digest).await?.is_some()
        {
            return Ok(None);
        }
        let mut conn = self.db.pool().acquire().await?;
        quota_room(&mut conn, tenant_id, size, None).await
    }
}

/// Takes the tenant's row lock for the rest of `tx`, so decisions against its storage quota
/// (check, then reserve or record) take turns: concurrent uploads cannot each see the same
/// room. Take it after any blob row's lock (`touch_blob`), never before, as every caller does.
pub(crate) async fn lock_tenant(tx: &mut sqlx::AnyConnection, tenant_id: &str) -> Result<()> {
    sqlx::query("UPDATE tenants SET storage_quota_bytes = storage_quota_bytes WHERE id = $1")
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The bytes the open upload sessions of tenant `t` hold against its quota: their declared
/// sizes, but for content stored since; `$2` is now (ms), `$3` a session to leave out ('' none).
pub(crate) const RESERVED_BYTES: &str = "(SELECT CAST(COALESCE(SUM(s.size), 0) AS BIGINT) FROM upload_sessions s
    WHERE s.tenant_id = t.id AND s.expires_at > $2 AND s.id <> $3
      AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.tenant_id = s.tenant_id AND b.sha256 = s.sha256))";

/// Fails with [`Error::QuotaExceeded`] unless `size` more bytes fit the tenant's quota, where
/// stored blobs and the declared sizes of its open upload sessions count as used (a session
/// reserves its size when it starts; one for content stored since costs nothing), except
/// `session`, the one being completed. Answers the bytes left, if there is a quota.
pub(crate) async fn quota_room(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    size: u64,
    session: Option<&str>,
) -> Result<Option<u64>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT t.storage_quota_bytes AS quota,
         (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b WHERE b.tenant_id = t.id) AS used,
         {RESERVED_BYTES} AS reserved
         FROM tenants t WHERE t.id = $1"
    )))
    .bind(tenant_id)
    .bind(now_ms())
    .bind(session.unwrap_or(""))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Error::not_found("tenant", tenant_id))?;
    let Some(quota) = row.try_get::<Option<i64>, _>("quota")? else { return Ok(None) };
    let (used, reserved): (i64, i64) = (row.try_get("used")?, row.try_get("reserved")?);
    let left = u64::try_from(quota - used - reserved).unwrap_or(0);
    if size > left {
        let held =
            if reserved > 0 { format!(" and its open upload sessions hold {reserved} more") } else { String::new() };
        return Err(Error::QuotaExceeded(format!(
            "this {size}-byte file does not fit: the tenant stores {used} of its {quota} bytes{held}"
        )));
    }
    Ok(Some(left))
}

/// Marks the blob used now; answers whether the tenant has it. The `UPDATE` takes the row's
/// lock, which is what orders an upload with garbage collection (gc.rs).
pub(crate) async fn touch_blob(
    tx: &mut sqlx::AnyConnection,
    tenant_id: &str,
    digest: &Digest,
    now: i64,
) -> Result<bool> {
    let touched =
        sqlx::query("UPDATE blobs SET last_used_at = $1, uses = uses + 1 WHERE tenant_id = $2 AND sha256 = $3")
            .bind(now)
            .bind(tenant_id)
            .bind(digest.as_hex())
            .execute(&mut *tx)
            .await?;
    Ok(touched.rows_affected() == 1)
}
