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

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    #[serde(skip)]
    pub id: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub actor: String,
    /// The tenant the change concerns (its name), if any.
    pub tenant: Option<String>,
    pub action: String,
    pub target: String,
    pub source_ip: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Which audit entries to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
    /// The acting key's id, or an external principal (`oidc:{issuer}:{sub}`).
    pub actor: Option<String>,
    /// An action (`key.revoke`), or a prefix ending in `*` (`key.*`).
    pub action: Option<String>,
    /// Bounds on the time, in ms since the epoch: `from` inclusive, `to` exclusive.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Registry {
    /// One page of audit entries matching `filter`, newest first.
    pub async fn audit_entries(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditRecord>> {
        let (action, prefix) = match filter.action.as_deref() {
            Some(a) => match a.strip_suffix('*') {
                Some(prefix) => (String::new(), prefix.to_owned()),
                None => (a.to_owned(), String::new()),
            },
            None => (String::new(), String::new()),
        };
        // Ids are UUIDv7, ordered by time; '~' sorts after every id.
        let rows = sqlx::query(
            "SELECT a.id, a.at, a.actor, t.slug AS tenant, a.action, a.target, a.source_ip, a.before_json, a.after_json
             FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id
             WHERE a.id < $1 AND ($2 = '' OR a.tenant_id = $2) AND ($3 = '' OR a.actor = $3)
               AND ($4 = '' OR a.action = $4) AND ($5 = '' OR substr(a.action, 1, CAST($6 AS INTEGER)) = $5)
               AND a.at >= $7 AND a.at < $8
             ORDER BY a.id DESC LIMIT $9",
        )
        .bind(page.after.as_deref().unwrap_or("~"))
        .bind(filter.tenant_id.as_deref().unwrap_or(""))
        .bind(filter.actor.as_deref().unwrap_or(""))
        .bind(action)
        .bind(&prefix)
        .bind(i64::try_from(prefix.chars().count()).unwrap_or(0))
        .bind(filter.from.unwrap_or(i64::MIN))
        .bind(filter.to.unwrap_or(i64::MAX))
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
                    tenant: r.try_get("tenant")?,
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
