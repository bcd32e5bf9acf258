//! The metadata database: one code path over sqlx's `Any` driver for Postgres and SQLite.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// As connected to; it may hold a password, so Debug leaves it out.
    url: std::sync::Arc<str>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Db {
    /// Connects to `postgres://…` or `sqlite://…` (the SQLite file is created if missing).
    pub async fn connect(url: &str) -> Result<Self> {
        install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let url = if rest.contains("mode=") {
                url.to_owned()
            } else if rest.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(crate::Error::Invalid(format!(
                "database URL must start with postgres:// or sqlite:// (got {:?})",
                url.split(':').next().unwrap_or_default()
            )));
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5));
        let options = match backend {
            Backend::Postgres => options.max_connections(16),
            Backend::Sqlite => options.max_connections(4).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                        .await?;
                    Ok(())
                })
            }),
        };
        let pool = options.connect(&url).await?;
        Ok(Self { pool, backend, url: url.into() })
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
    /// SQLITE_BUSY when another connection wrote meanwhile, which the busy timeout cannot cure.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Postgres => self.pool.begin().await?,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// Applies the migrations not yet applied. One tree serves both backends: its SQL is
    /// written to run on each. sqlx keeps each applied file's checksum and refuses to start
    /// when a file changed since, so an applied file is never edited; a change is a new file.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../migrations")
            .run(&self.pool)
            .await
            .map_err(|e| crate::Error::Database(sqlx::Error::Migrate(Box::new(e))))
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Sets the pool's gauges (`modelgate_db_pool_connections`, `..._max_connections`) to now.
    pub fn observe_pool(&self) {
        static CONNECTIONS: std::sync::LazyLock<prometheus::IntGaugeVec> = std::sync::LazyLock::new(|| {
            prometheus::register_int_gauge_vec!(
                "modelgate_db_pool_connections",
                "Metadata database connections by state (idle or in_use).",
                &["state"]
            )
            .expect("the pool gauges are registered once (a bug otherwise)")
        });
        static MAX: std::sync::LazyLock<prometheus::IntGauge> = std::sync::LazyLock::new(|| {
            prometheus::register_int_gauge!(
                "modelgate_db_pool_max_connections",
                "The most connections the metadata database pool opens."
            )
            .expect("the pool gauges are registered once (a bug otherwise)")
        });
        let (size, idle) = (i64::from(self.pool.size()), i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX));
        CONNECTIONS.with_label_values(&["idle"]).set(idle);
        CONNECTIONS.with_label_values(&["in_use"]).set((size - idle).max(0));
        MAX.set(i64::from(self.pool.options().get_max_connections()));
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch: how every time is stored.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Serializes a stored time (ms since the epoch) as RFC 3339, as the API shows times.
/// 9999-12-31T23:59:59.999Z, the latest time RFC 3339 writes: a later one is refused where
/// it enters.
pub const LATEST_MS: i64 = 253_402_300_799_999;

pub fn rfc3339<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000)
        .map_err(serde::ser::Error::custom)?;
    let text = t.format(&time::format_description::well_known::Rfc3339).map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

pub fn rfc3339_opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => rfc3339(ms, s),
        None => s.serialize_none(),
    }
}
