//! Request limits (per tenant and per key) and the shared state that enforces them across
//! gateways: per-minute windows in the database, from which each gateway takes leases, and
//! the list of live gateways, among which concurrency limits are split.

use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::db::now_ms;
use crate::{Error, Registry, Result};

/// A tenant's or a key's limits; None is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub requests_per_minute: Option<i64>,
    #[serde(default)]
    pub concurrent_requests: Option<i64>,
    /// Tokens generated per minute (text generation).
    #[serde(default)]
    pub tokens_per_minute: Option<i64>,
}

impl Limits {
    pub(crate) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            requests_per_minute: r.try_get("requests_per_minute")?,
            concurrent_requests: r.try_get("concurrent_requests")?,
            tokens_per_minute: r.try_get("tokens_per_minute")?,
        })
    }

    pub fn check(&self) -> Result<()> {
        let values = [self.requests_per_minute, self.concurrent_requests, self.tokens_per_minute];
        if values.iter().flatten().any(|v| *v < 1) {
            return Err(Error::Invalid("limits must be at least 1 (or null for no limit)".into()));
        }
        Ok(())
    }
}

/// A gateway seen within this long counts as alive.
pub const GATEWAY_ALIVE_MS: i64 = 5_000;

impl Registry {
    /// Takes up to `want` units of `limit` from the window `(scope, window_start)`, never past
    /// the limit; answers how many it got (0: the window is used up).
    pub async fn take_from_window(&self, scope: &str, window_start: i64, want: i64, limit: i64) -> Result<i64> {
        sqlx::query("INSERT INTO rate_windows (scope, window_start, used) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING")
            .bind(scope)
            .bind(window_start)
            .execute(self.db.pool())
            .await?;
        // Compare-and-set: another gateway may take from the same window at the same moment.
        for _ in 0..16 {
            let used: i64 = sqlx::query("SELECT used FROM rate_windows WHERE scope = $1 AND window_start = $2")
                .bind(scope)
                .bind(window_start)
                .fetch_one(self.db.pool())
                .await?
                .try_get("used")?;
            let grant = want.min(limit - used);
            if grant <= 0 {
                return Ok(0);
            }
            let taken = sqlx::query(
                "UPDATE rate_windows SET used = used + $1 WHERE scope = $2 AND window_start = $3 AND used = $4",
            )
            .bind(grant)
            .bind(scope)
            .bind(window_start)
            .bind(used)
            .execute(self.db.pool())
            .await?;
            if taken.rows_affected() == 1 {
                return Ok(grant);
            }
        }
        Err(Error::Conflict("the limit's window is too contended; try again".into()))
    }

    /// Adds `n` to a window whatever its limit (tokens are counted once generated).
    pub async fn add_to_window(&self, scope: &str, window_start: i64, n: i64) -> Result<i64> {
        sqlx::query(
            "INSERT INTO rate_windows (scope, window_start, used) VALUES ($1, $2, $3)
             ON CONFLICT (scope, window_start) DO UPDATE SET used = rate_windows.used + excluded.used",
        )
        .bind(scope)
        .bind(window_start)
        .bind(n)
        .execute(self.db.pool())
        .await?;
        self.window_used(scope, window_start).await
    }

    pub async fn window_used(&self, scope: &str, window_start: i64) -> Result<i64> {
        let row = sqlx::query("SELECT used FROM rate_windows WHERE scope = $1 AND window_start = $2")
            .bind(scope)
            .bind(window_start)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("used")).transpose()?.unwrap_or(0))
    }

    /// Records that gateway `id` is alive, drops windows and gateways long gone, and answers
    /// how many gateways are alive.
    pub async fn gateway_heartbeat(&self, id: &str) -> Result<i64> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO gateway_instances (id, seen_at) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(id)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        sqlx::query("DELETE FROM gateway_instances WHERE seen_at < $1")
            .bind(now - 60_000)
            .execute(self.db.pool())
            .await?;
        sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
            .bind(now - 600_000)
            .execute(self.db.pool())
            .await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM gateway_instances WHERE seen_at >= $1")
            .bind(now - GATEWAY_ALIVE_MS)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<i64, _>("n")?.max(1))
    }

    /// Removes this gateway from the live ones (on a clean shutdown).
    pub async fn gateway_gone(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM gateway_instances WHERE id = $1").bind(id).execute(self.db.pool()).await?;
        Ok(())
    }
}
