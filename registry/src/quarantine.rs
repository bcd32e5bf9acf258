//! Quarantine of versions that take their runners down. The gateway decides whom a runner's
//! death blames (gateway `runners/blame.rs`) and records it here as strikes; a version whose
//! strikes within [`STRIKE_WINDOW_MS`] reach [`QUARANTINE_AT`] is quarantined: inference
//! answers 503 `version_quarantined` until a platform admin clears it. The state lives in the
//! database, so every gateway sees it; a quarantine (and its clearing) is announced as a
//! change of the version's model, so resolution caches drop it at once.

use serde_json::json;
use sqlx::Row as _;

use crate::audit::{self, Entry};
use crate::db::{new_id, now_ms};
use crate::names::ModelName;
use crate::{Actor, Error, Registry, Result};

/// Strikes older than this no longer count.
pub const STRIKE_WINDOW_MS: i64 = 10 * 60 * 1000;
/// The strikes within the window that quarantine a version.
pub const QUARANTINE_AT: i64 = 2;

/// Why and since when a version is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Quarantine {
    /// The version's id: what `DELETE /api/v1/admin/quarantine/{version_id}` takes.
    pub version_id: String,
    pub reason: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub since: i64,
    /// The strikes within the window when it was quarantined.
    pub strikes: i64,
}

/// What one strike did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Struck {
    /// The version's strikes within the window, this one included.
    pub strikes: i64,
    /// The version is quarantined now.
    pub quarantined: bool,
    /// This strike quarantined it.
    pub newly: bool,
}

impl Registry {
    /// Records a strike of `weight` against a version and quarantines it when its strikes
    /// within the window reach [`QUARANTINE_AT`]. Strikes against one version are counted
    /// under its row's lock, so gateways striking at once cannot both miss the threshold.
    pub async fn strike(&self, version_id: &str, weight: i64, reason: &str) -> Result<Struck> {
        self.strike_at(version_id, weight, reason, now_ms()).await
    }

    async fn strike_at(&self, version_id: &str, weight: i64, reason: &str, now: i64) -> Result<Struck> {
        let model = self.model_of_version(version_id).await?;
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE model_versions SET status = status WHERE id = $1")
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO version_strikes (id, version_id, at, weight, reason) VALUES ($1, $2, $3, $4, $5)")
            .bind(new_id())
            .bind(version_id)
            .bind(now)
            .bind(weight)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        let strikes: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(weight), 0) AS BIGINT) AS n FROM version_strikes WHERE version_id = $1 AND at > $2",
        )
        .bind(version_id)
        .bind(now - STRIKE_WINDOW_MS)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let already = sqlx::query("SELECT 1 AS one FROM version_quarantines WHERE version_id = $1")
            .bind(version_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        let newly = !already && strikes >= QUARANTINE_AT;
        if newly {
            sqlx::query("INSERT INTO version_quarantines (version_id, since, strikes, reason) VALUES ($1, $2, $3, $4)")
                .bind(version_id)
                .bind(now)
                .bind(strikes)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            self.announce(&mut tx, &model).await?;
            let quarantine =
                Quarantine { version_id: version_id.to_owned(), reason: reason.to_owned(), since: now, strikes };
            let entry = Entry {
                tenant_id: Some(&model.tenant_id),
                action: "version.quarantine",
                target: format!("version/{version_id}"),
                before: None,
                after: serde_json::to_value(&quarantine).ok(),
            };
            audit::record(&mut tx, &Actor::system(), entry).await?;
        }
        tx.commit().await?;
        if newly {
            self.announced(&model);
        }
        Ok(Struck { strikes, quarantined: already || newly, newly })
    }

    /// The version's quarantine, if it is quarantined.
    pub async fn quarantine(&self, version_id: &str) -> Result<Option<Quarantine>> {
        let row = sqlx::query("SELECT since, strikes, reason FROM version_quarantines WHERE version_id = $1")
            .bind(version_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            Ok(Quarantine {
                version_id: version_id.to_owned(),
                reason: r.try_get("reason")?,
                since: r.try_get("since")?,
                strikes: r.try_get("strikes")?,
            })
        })
        .transpose()
    }

    /// Lifts a version's quarantine and forgets its strikes (audited); answers what was lifted.
    /// A version that is not quarantined is not found.
    pub async fn clear_quarantine(&self, actor: &Actor, version_id: &str) -> Result<Quarantine> {
        let not_quarantined = || Error::not_found("quarantined version", version_id);
        let before = self.quarantine(version_id).await?.ok_or_else(not_quarantined)?;
        let model = self.model_of_version(version_id).await?;
        let mut tx = self.db.begin().await?;
        let deleted = sqlx::query("DELETE FROM version_quarantines WHERE version_id = $1")
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(not_quarantined());
        }
        sqlx::query("DELETE FROM version_strikes WHERE version_id = $1").bind(version_id).execute(&mut *tx).await?;
        self.announce(&mut tx, &model).await?;
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: "version.quarantine.clear",
            target: format!("version/{version_id}"),
            before: Some(json!(before)),
            after: None,
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        self.announced(&model);
        Ok(before)
    }

    /// The model a version belongs to (read before a transaction: SQLite's pool is small).
    async fn model_of_version(&self, version_id: &str) -> Result<crate::models::Model> {
        let row = sqlx::query(
            "SELECT m.tenant_id, m.name FROM model_versions v JOIN models m ON m.id = v.model_id WHERE v.id = $1",
        )
        .bind(version_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| Error::not_found("version", version_id))?;
        let tenant_id: String = row.try_get("tenant_id")?;
        let name = ModelName::parse(&row.try_get::<String, _>("name")?)?;
        self.model(&tenant_id, &name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::names::{Task, TenantSlug};
    use crate::storage::{Storage, StorageConfig};
    use crate::versions::NewVersion;

    async fn registry(url: &str) -> Registry {
        let db = Db::connect(url).await.expect("database");
        db.migrate().await.expect("migrations");
        let config: StorageConfig = serde_json::from_value(json!({"url": "memory://"})).expect("storage config");
        let storage = Storage::open(&config).expect("memory store");
        Registry::new(db, storage)
    }

    /// A draft version in a new tenant: strikes need nothing more.
    async fn version(registry: &Registry) -> String {
        let actor = Actor::system();
        let slug = TenantSlug::parse(&format!("t{}", &new_id()[24..])).expect("slug");
        let tenant = registry.create_tenant(&actor, &slug).await.expect("tenant");
        let name = ModelName::parse("m").expect("name");
        let model = registry.create_model(&actor, &tenant.id, &name, Task::Embedding, "", &[]).await.expect("model");
        registry.create_version(&actor, &model, NewVersion::default()).await.expect("version").id
    }

    async fn strikes_count_within_ten_minutes(registry: Registry) {
        let v = version(&registry).await;
        let t0 = now_ms();
        let first = registry.strike_at(&v, 1, "crash 1", t0).await.expect("strike");
        assert_eq!(first, Struck { strikes: 1, quarantined: false, newly: false });
        // Ten minutes later the first strike has expired: still one.
        let later = registry.strike_at(&v, 1, "crash 2", t0 + STRIKE_WINDOW_MS).await.expect("strike");
        assert_eq!(later, Struck { strikes: 1, quarantined: false, newly: false });
        assert_eq!(registry.quarantine(&v).await.expect("read"), None);
        // A second strike within the window quarantines.
        let third = registry.strike_at(&v, 1, "crash 3", t0 + STRIKE_WINDOW_MS + 60_000).await.expect("strike");
        assert_eq!(third, Struck { strikes: 2, quarantined: true, newly: true });
        let q = registry.quarantine(&v).await.expect("read").expect("quarantined");
        assert_eq!((q.reason.as_str(), q.strikes), ("crash 3", 2));
        // Cleared: strikes forgotten, so one more strike does not quarantine again.
        registry.clear_quarantine(&Actor::system(), &v).await.expect("cleared");
        assert_eq!(registry.quarantine(&v).await.expect("read"), None);
        let after = registry.strike(&v, 1, "crash 4").await.expect("strike");
        assert_eq!(after, Struck { strikes: 1, quarantined: false, newly: false });
        assert!(matches!(registry.clear_quarantine(&Actor::system(), &v).await, Err(Error::NotFound { .. })));
        // A sole suspect's strike weighs two: quarantined at once.
        let sole = version(&registry).await;
        let struck = registry.strike(&sole, 2, "alone in flight").await.expect("strike");
        assert_eq!(struck, Struck { strikes: 2, quarantined: true, newly: true });
        assert!(matches!(registry.strike("no-such-version", 1, "x").await, Err(Error::NotFound { .. })));
    }

    #[tokio::test]
    async fn strikes_count_within_ten_minutes_on_sqlite() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        strikes_count_within_ten_minutes(registry(&url).await).await;
    }

    #[tokio::test]
    async fn strikes_count_within_ten_minutes_on_postgres() {
        let Ok(server) = std::env::var("MODELGATE_TEST_POSTGRES_URL") else {
            eprintln!("MODELGATE_TEST_POSTGRES_URL is not set: skipped");
            return;
        };
        use sqlx::Executor as _;
        sqlx::any::install_default_drivers();
        let name = format!("mg_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&server).await.expect("Postgres server");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("test database");
        let (base, _) = server.rsplit_once('/').expect("the URL names a database");
        strikes_count_within_ten_minutes(registry(&format!("{base}/{name}")).await).await;
    }
}
