//! Usage metering: requests, errors, tokens and latency per tenant, key, model, version and
//! minute, rolled up into hours and days as it is written (a flush adds to all three
//! tables), with retention so the tables stay small.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row as _;

use crate::{Error, Registry, Result};

/// Upper bounds (ms) of the latency buckets; slower requests land in a last one.
pub const LATENCY_BOUNDS_MS: [i64; 7] = [10, 50, 100, 250, 500, 1000, 5000];
const BUCKET_COLUMNS: [&str; 8] = ["le_10", "le_50", "le_100", "le_250", "le_500", "le_1000", "le_5000", "le_inf"];
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// How long minute and hour rows are kept; day rows are kept.
const MINUTE_RETENTION_MS: i64 = 2 * DAY_MS;
const HOUR_RETENTION_MS: i64 = 90 * DAY_MS;
/// The model requests that named no model that exists are metered under: the name a caller
/// sent is theirs to choose, so it must not become a row of its own (or a metrics series).
pub const UNRESOLVED_MODEL: &str = "(unresolved)";
/// The longest model name a usage row keeps (model names are at most 128 bytes).
pub const MAX_MODEL_LEN: usize = 128;
/// The longest caller id a usage row keeps (key ids are short; an OIDC caller is
/// `oidc:{issuer}:{sub}`, whose `sub` its issuer chose).
pub const MAX_CALLER_LEN: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn bounded(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    pub tenant_id: String,
    pub key_id: String,
    /// The model's name, or [`UNRESOLVED_MODEL`]; cut to [`MAX_MODEL_LEN`] when written.
    pub model: String,
    /// 0 when the request named no version that exists.
    pub version: i64,
    /// Start of the minute (ms since the epoch).
    pub minute: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageCounts {
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms_sum: i64,
    /// Requests by latency, per [`LATENCY_BOUNDS_MS`] and a last bucket for slower ones.
    pub latency_buckets: [i64; 8],
}

impl UsageCounts {
    /// One request.
    pub fn one(ok: bool, input_tokens: i64, output_tokens: i64, latency_ms: i64) -> Self {
        let mut latency_buckets = [0; 8];
        let bucket = LATENCY_BOUNDS_MS.iter().position(|b| latency_ms <= *b).unwrap_or(7);
        latency_buckets[bucket] = 1;
        Self {
            requests: 1,
            errors: i64::from(!ok),
            input_tokens,
            output_tokens,
            latency_ms_sum: latency_ms,
            latency_buckets,
        }
    }

    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.latency_ms_sum += other.latency_ms_sum;
        for (a, b) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *a += b;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Minute,
    Hour,
    Day,
}

impl Step {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "minute" => Ok(Step::Minute),
            "hour" => Ok(Step::Hour),
            "day" => Ok(Step::Day),
            _ => Err(Error::Invalid("step must be minute, hour or day".into())),
        }
    }

    fn table(self) -> &'static str {
        match self {
            Step::Minute => "usage_minute",
            Step::Hour => "usage_hour",
            Step::Day => "usage_day",
        }
    }

    /// The length of one step.
    pub fn millis(self) -> i64 {
        match self {
            Step::Minute => MINUTE_MS,
            Step::Hour => HOUR_MS,
            Step::Day => DAY_MS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Version,
    Key,
}

impl GroupBy {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "model" => Ok(GroupBy::Model),
            "version" => Ok(GroupBy::Version),
            "key" => Ok(GroupBy::Key),
            _ => Err(Error::Invalid("group_by must be model, version or key".into())),
        }
    }

    fn columns(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Version => "model, version",
            GroupBy::Key => "key_id",
        }
    }
}

/// One bucket of one group.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsagePoint {
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub bucket: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(flatten)]
    pub counts: UsageCounts,
}

impl Registry {
    /// Adds a batch of counts to the minute, hour and day tables, in one transaction.
    pub async fn record_usage(&self, batch: &HashMap<UsageKey, UsageCounts>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        for step in [Step::Minute, Step::Hour, Step::Day] {
            let table = step.table();
            let adds: Vec<String> = ["requests", "errors", "input_tokens", "output_tokens", "latency_ms_sum"]
                .iter()
                .chain(BUCKET_COLUMNS.iter())
                .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
                .collect();
            let sql = format!(
                "INSERT INTO {table} (bucket, tenant_id, key_id, model, version, requests, errors, input_tokens,
                 output_tokens, latency_ms_sum, {buckets})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
                 ON CONFLICT (bucket, tenant_id, key_id, model, version) DO UPDATE SET {adds}",
                buckets = BUCKET_COLUMNS.join(", "),
                adds = adds.join(", ")
            );
            for (key, counts) in batch {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(key.minute - key.minute.rem_euclid(step.millis()))
                    .bind(&key.tenant_id)
                    .bind(bounded(&key.key_id, MAX_CALLER_LEN))
                    .bind(bounded(&key.model, MAX_MODEL_LEN))
                    .bind(key.version)
                    .bind(counts.requests)
                    .bind(counts.errors)
                    .bind(counts.input_tokens)
                    .bind(counts.output_tokens)
                    .bind(counts.latency_ms_sum);
                for n in counts.latency_buckets {
                    query = query.bind(n);
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's usage (every tenant's with None) from `from` to `to` (ms), per `step`,
    /// optionally per group.
    pub async fn usage(
        &self,
        tenant_id: Option<&str>,
        from: i64,
        to: i64,
        step: Step,
        group_by: Option<GroupBy>,
    ) -> Result<Vec<UsagePoint>> {
        if to <= from {
            return Err(Error::Invalid("to must be after from".into()));
        }
        if (to - from) / step.millis() > 10_000 {
            return Err(Error::Invalid("that range holds more than 10000 steps; use a larger step".into()));
        }
        let group = group_by.map(GroupBy::columns);
        let sums: Vec<String> = ["requests", "errors", "input_tokens", "output_tokens", "latency_ms_sum"]
            .iter()
            .chain(BUCKET_COLUMNS.iter())
            .map(|c| format!("CAST(SUM({c}) AS BIGINT) AS {c}"))
            .collect();
        let sql = format!(
            "SELECT bucket{g}, {sums} FROM {table} WHERE ($1 = '' OR tenant_id = $1) AND bucket >= $2 AND bucket < $3
             GROUP BY bucket{g} ORDER BY bucket{g}",
            g = group.map(|g| format!(", {g}")).unwrap_or_default(),
            sums = sums.join(", "),
            table = step.table(),
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id.unwrap_or(""))
            .bind(from - from.rem_euclid(step.millis()))
            .bind(to)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let mut latency_buckets = [0; 8];
                for (slot, column) in latency_buckets.iter_mut().zip(BUCKET_COLUMNS) {
                    *slot = r.try_get(column)?;
                }
                let has = |g: GroupBy| group_by == Some(g);
                Ok(UsagePoint {
                    bucket: r.try_get("bucket")?,
                    model: if has(GroupBy::Model) || has(GroupBy::Version) { r.try_get("model")? } else { None },
                    version: if has(GroupBy::Version) { r.try_get("version")? } else { None },
                    key_id: if has(GroupBy::Key) { r.try_get("key_id")? } else { None },
                    counts: UsageCounts {
                        requests: r.try_get("requests")?,
                        errors: r.try_get("errors")?,
                        input_tokens: r.try_get("input_tokens")?,
                        output_tokens: r.try_get("output_tokens")?,
                        latency_ms_sum: r.try_get("latency_ms_sum")?,
                        latency_buckets,
                    },
                })
            })
            .collect()
    }

    /// Deletes minute rows older than two days and hour rows older than 90 days.
    pub async fn prune_usage(&self, now_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM usage_minute WHERE bucket < $1")
            .bind(now_ms - MINUTE_RETENTION_MS)
            .execute(self.db.pool())
            .await?;
        sqlx::query("DELETE FROM usage_hour WHERE bucket < $1")
            .bind(now_ms - HOUR_RETENTION_MS)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
