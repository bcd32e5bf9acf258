//! The audit log: every management change, with who, what, when, from where, before and after.

use serde_json::Value;
use sqlx::{AnyConnection, Row as _};

use crate::db::{new_id, now_ms};
use crate::page::{Page, PageRequest};
use crate::{Actor, Registry, Result};

/// One management change, written in the same transaction as the change itself.
pub struct Entry<'a> {
    pub tenant_id: Option<&'a str>,
    pub action: &'static str,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

pub(crate) async fn record(conn: &mut AnyConnection, actor: &Actor, entry: Entry<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, tenant_id, action, target, source_ip, before_json, after_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new_id())
    .bind(now_ms())
    .bind(&actor.key_id)
    .bind(entry.tenant_id)
    .bind(entry.action)
    .bind(entry.target)
    .bind(actor.source_ip.as_deref())
    .bind(entry.before.map(|v| v.to_string()))
    .bind(entry.after.map(|v| v.to_string()))
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    #[serde(skip)]
    pub id: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source_ip: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Registry {
    /// One page of a tenant's audit entries, newest first.
    pub async fn audit_entries(&self, tenant_id: &str, page: &PageRequest) -> Result<Page<AuditRecord>> {
        // Ids are UUIDv7, ordered by time; '~' sorts after every id.
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, source_ip, before_json, after_json FROM audit_log
             WHERE tenant_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(page.after.as_deref().unwrap_or("~"))
        .bind(page.fetch())
        .fetch_all(self.db.pool())
        .await?;
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        rows.into_iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    source_ip: r.try_get("source_ip")?,
                    before: json(r.try_get("before_json")?),
                    after: json(r.try_get("after_json")?),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(|entries| Page::new(entries, page, |e| e.id.clone()))
    }
}
