//! Garbage collection of blobs no live version references.
//!
//! The race to win is with an upload of the same bytes: it finds the blob's row, skips
//! storing its own copy (or writes its copy straight to the blob's content address), and
//! references the blob, while GC decides the blob is unused. Both sides therefore meet on the
//! blob's row:
//! - an upload touches the row (`UPDATE … SET uses = uses + 1`) in the transaction that records
//!   its file, which takes the row's lock; an upload that writes to the content address, or
//!   skips the bytes because the tenant has them, also touches it when it starts, in the
//!   transaction that writes its intent (a `blob_uploads` row, or its session's row), and GC
//!   spares a blob while such an intent exists;
//! - GC deletes the row only if `uses` is still what it was when GC found the blob
//!   unreferenced (a `DELETE` that re-checks the row under that lock), and deletes the object
//!   *before* it commits.
//!
//! If the upload touches the row first, GC's `DELETE` waits for it and then finds `uses`
//! changed. If GC deletes first, the upload's `UPDATE` waits, finds no row, and stores its own
//! copy after GC's object deletion is done. On SQLite the transactions simply take turns. A
//! timestamp would not do: an upload can read the clock before GC does and commit after it.

use std::time::Duration;

use serde::Serialize;
use sqlx::Row as _;

use crate::db::now_ms;
use crate::names::Digest;
use crate::{Registry, Result};

/// Blobs referenced by a version of a live (not deleted) model stay, unless the version
/// failed (an abandoned draft); archived versions of a live model keep theirs, for audit.
const UNREFERENCED: &str = "NOT EXISTS (
    SELECT 1 FROM version_files f
    JOIN model_versions v ON v.id = f.version_id
    JOIN models m ON m.id = v.model_id
    WHERE f.sha256 = blobs.sha256 AND m.tenant_id = blobs.tenant_id AND m.deleted_at IS NULL
      AND v.status <> 'failed')
  AND NOT EXISTS (SELECT 1 FROM upload_sessions s WHERE s.tenant_id = blobs.tenant_id AND s.sha256 = blobs.sha256)
  AND NOT EXISTS (SELECT 1 FROM blob_uploads u WHERE u.tenant_id = blobs.tenant_id AND u.sha256 = blobs.sha256)";

/// A staged upload lives for one request; one older than this was left by a crash or a
/// dropped connection, whatever grace period blobs get.
const STAGING_MIN_AGE: Duration = Duration::from_secs(3600);

/// An upload intent lives for one request; one this old was left by a crash.
const INTENT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct GcReport {
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub staged_uploads_deleted: u64,
    pub upload_sessions_expired: u64,
    pub drafts_failed: u64,
}

impl Registry {
    /// Marks drafts older than `draft_ttl` failed (their files become collectable), then
    /// deletes blobs unreferenced and unused for `grace`, and staged uploads older than
    /// `grace` or an hour, whichever is longer. Also applies the usage tables' retention.
    pub async fn collect_garbage(&self, grace: Duration, draft_ttl: Duration) -> Result<GcReport> {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms() - millis(grace);
        let failed =
            sqlx::query("UPDATE model_versions SET status = 'failed' WHERE status = 'draft' AND created_at < $1")
                .bind(now_ms().saturating_sub(millis(draft_ttl)))
                .execute(self.db.pool())
                .await?;
        self.prune_usage(now_ms()).await?;
        sqlx::query("DELETE FROM blob_uploads WHERE started_at < $1")
            .bind(now_ms() - millis(INTENT_MAX_AGE))
            .execute(self.db.pool())
            .await?;
        let mut report = GcReport {
            upload_sessions_expired: self.expire_upload_sessions().await?,
            drafts_failed: failed.rows_affected(),
            ..GcReport::default()
        };
        let candidates = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT tenant_id, sha256, size, uses FROM blobs WHERE last_used_at < $1 AND {UNREFERENCED}"
        )))
        .bind(cutoff)
        .fetch_all(self.db.pool())
        .await?;
        for row in candidates {
            let tenant_id: String = row.try_get("tenant_id")?;
            let digest = Digest::parse(&row.try_get::<String, _>("sha256")?)?;
            let mut tx = self.db.begin().await?;
            let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM blobs WHERE tenant_id = $1 AND sha256 = $2 AND uses = $3 AND {UNREFERENCED}"
            )))
            .bind(&tenant_id)
            .bind(digest.as_hex())
            .bind(row.try_get::<i64, _>("uses")?)
            .execute(&mut *tx)
            .await?;
            if deleted.rows_affected() == 1 {
                // Inside the transaction: an upload waiting on this row finds the object gone first.
                self.storage.delete_blob(&tenant_id, &digest).await?;
                tx.commit().await?;
                report.blobs_deleted += 1;
                report.bytes_freed += u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0);
            }
        }
        let staging_cutoff = cutoff.min(now_ms() - i64::try_from(STAGING_MIN_AGE.as_millis()).unwrap_or(0));
        for tenant in sqlx::query("SELECT id FROM tenants").fetch_all(self.db.pool()).await? {
            let tenant_id: String = tenant.try_get("id")?;
            report.staged_uploads_deleted += self.storage.delete_stale_staging(&tenant_id, staging_cutoff).await?;
        }
        if report != GcReport::default() {
            tracing::info!(
                gc.blobs = report.blobs_deleted,
                gc.bytes = report.bytes_freed,
                gc.staged = report.staged_uploads_deleted,
                "garbage collected"
            );
        }
        Ok(report)
    }
}
