//! Dashboard sessions signed out before their token expired. A session is a token of the
//! gateway carrying a random `sid`; signing out records the sid here, in the database every
//! gateway reads, so the session ends everywhere at once, whatever copies of its cookie exist.

use sqlx::Row as _;

use crate::db::now_ms;
use crate::{Registry, Result};

impl Registry {
    /// Ends the session `sid` for good; `expires_at` (ms): when its last token expires, after
    /// which the row is dropped. Rows past their time are dropped here too.
    pub async fn revoke_session(&self, sid: &str, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO revoked_sessions (sid, expires_at) VALUES ($1, $2)
             ON CONFLICT (sid) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(sid)
        .bind(expires_at)
        .execute(self.db.pool())
        .await?;
        sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < $1")
            .bind(now_ms())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Whether the session `sid` was signed out.
    pub async fn session_revoked(&self, sid: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM revoked_sessions WHERE sid = $1")
            .bind(sid)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}
