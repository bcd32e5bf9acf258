//! Tenants: isolated namespaces.

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::audit::{self, Entry};
use crate::db::{new_id, now_ms};
use crate::limits::Limits;
use crate::names::TenantSlug;
use crate::page::{Page, PageRequest};
use crate::{Actor, Error, Registry, Result};

/// A tenant's storage limit and what it uses, and its request limits.
#[derive(Debug, Clone, Serialize)]
pub struct StorageUsage {
    /// Bytes of distinct blobs stored (identical files count once).
    pub used_bytes: i64,
    /// Declared sizes of open upload sessions, held against the quota until they end.
    pub reserved_bytes: i64,
    pub quota_bytes: Option<i64>,
    #[serde(flatten)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: TenantSlug,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Set while the tenant is suspended: its keys and tokens are refused, its data kept.
    #[serde(serialize_with = "crate::db::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub suspended_at: Option<i64>,
    pub limits: Limits,
}

const COLUMNS: &str = "id, slug, created_at, suspended_at, requests_per_minute, concurrent_requests, tokens_per_minute";

fn from_row(r: AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: r.try_get("id")?,
        name: TenantSlug::parse(&r.try_get::<String, _>("slug")?)?,
        created_at: r.try_get("created_at")?,
        suspended_at: r.try_get("suspended_at")?,
        limits: Limits::from_row(&r)?,
    })
}

impl Registry {
    pub async fn create_tenant(&self, actor: &Actor, name: &TenantSlug) -> Result<Tenant> {
        let tenant = Tenant {
            id: new_id(),
            name: name.clone(),
            created_at: now_ms(),
            suspended_at: None,
            limits: Limits::default(),
        };
        let mut tx = self.db.begin().await?;
        let inserted =
            sqlx::query("INSERT INTO tenants (id, slug, created_at) VALUES ($1, $2, $3) ON CONFLICT (slug) DO NOTHING")
                .bind(&tenant.id)
                .bind(tenant.name.as_str())
                .bind(tenant.created_at)
                .execute(&mut *tx)
                .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::Conflict(format!("tenant {name:?} already exists", name = name.as_str())));
        }
        let after = serde_json::to_value(&tenant).ok();
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: Some(&tenant.id),
                action: "tenant.create",
                target: format!("tenant/{name}"),
                before: None,
                after,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// One page of tenants, by name.
    pub async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE slug > $1 ORDER BY slug LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(page.fetch())
            .fetch_all(self.db.pool())
            .await?;
        let tenants = rows.into_iter().map(from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::new(tenants, page, |t| t.name.to_string()))
    }

    pub async fn tenant_by_slug(&self, name: &TenantSlug) -> Result<Tenant> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE slug = $1")))
            .bind(name.as_str())
            .fetch_optional(self.db.pool())
            .await?
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found("tenant", name))
    }

    pub async fn storage_usage(&self, tenant_id: &str) -> Result<StorageUsage> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t.storage_quota_bytes AS quota, t.requests_per_minute, t.concurrent_requests, t.tokens_per_minute,
             (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b WHERE b.tenant_id = t.id) AS used,
             {} AS reserved
             FROM tenants t WHERE t.id = $1",
            crate::files::RESERVED_BYTES
        )))
        .bind(tenant_id)
        .bind(crate::db::now_ms())
        .bind("")
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| Error::not_found("tenant", tenant_id))?;
        Ok(StorageUsage {
            used_bytes: row.try_get("used")?,
            reserved_bytes: row.try_get("reserved")?,
            quota_bytes: row.try_get("quota")?,
            limits: Limits::from_row(&row)?,
        })
    }

    /// Sets the tenant's storage quota and request limits (None lifts one).
    pub async fn set_quotas(
        &self,
        actor: &Actor,
        tenant: &Tenant,
        quota_bytes: Option<i64>,
        limits: Limits,
    ) -> Result<StorageUsage> {
        if quota_bytes.is_some_and(|q| q < 0) {
            return Err(Error::Invalid("storage_bytes must be zero or more".into()));
        }
        limits.check()?;
        let before = self.storage_usage(&tenant.id).await?;
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "UPDATE tenants SET storage_quota_bytes = $1, requests_per_minute = $2, concurrent_requests = $3,
             tokens_per_minute = $4 WHERE id = $5",
        )
        .bind(quota_bytes)
        .bind(limits.requests_per_minute)
        .bind(limits.concurrent_requests)
        .bind(limits.tokens_per_minute)
        .bind(&tenant.id)
        .execute(&mut *tx)
        .await?;
        let after = StorageUsage { quota_bytes, limits, ..before.clone() };
        let entry = Entry {
            tenant_id: Some(&tenant.id),
            action: "tenant.quota.set",
            target: format!("tenant/{}", tenant.name),
            before: serde_json::to_value(&before).ok(),
            after: serde_json::to_value(&after).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        Ok(after)
    }

    pub async fn tenant_by_id(&self, id: &str) -> Result<Tenant> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    /// Suspends (or resumes) a tenant: while suspended every key and token of it is refused;
    /// nothing of its data changes. Doing it twice changes nothing more.
    pub async fn set_suspended(&self, actor: &Actor, tenant: &Tenant, suspended: bool) -> Result<Tenant> {
        let mut tx = self.db.begin().await?;
        let at = suspended.then(now_ms);
        sqlx::query(
            "UPDATE tenants SET suspended_at = CASE WHEN $1 = 1 THEN COALESCE(suspended_at, $2) END WHERE id = $3",
        )
        .bind(i64::from(suspended))
        .bind(at)
        .bind(&tenant.id)
        .execute(&mut *tx)
        .await?;
        let after =
            Tenant { suspended_at: if suspended { tenant.suspended_at.or(at) } else { None }, ..tenant.clone() };
        let entry = Entry {
            tenant_id: Some(&tenant.id),
            action: if suspended { "tenant.suspend" } else { "tenant.resume" },
            target: format!("tenant/{}", tenant.name),
            before: serde_json::to_value(tenant).ok(),
            after: serde_json::to_value(&after).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        Ok(after)
    }
}
