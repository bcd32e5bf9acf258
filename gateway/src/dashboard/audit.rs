//! The audit log: filter by tenant, actor, action and time; newest first; paginated.

use actix_web::{HttpResponse, get, web};
use askama::Template;
use registry::audit::AuditFilter;
use registry::names::Role;
use registry::page::PageRequest;
use serde::Deserialize;

use super::actors::{Actor, KeyNames};
use super::view::{Chrome, Session, url_encode, when};
use super::{PageError, html};
use crate::AppState;
use crate::auth::Scope;
use crate::error::ApiError;
use crate::routes::parse_time;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    /// A day (`2026-11-27`, from its start) or a time (RFC 3339).
    #[serde(default)]
    from: String,
    /// A day (up to its end) or a time.
    #[serde(default)]
    to: String,
    cursor: Option<String>,
}

struct EntryRow {
    at: String,
    actor: Actor,
    tenant: String,
    action: String,
    target: String,
    source_ip: String,
    before: String,
    after: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    /// Whether the tenant filter can be changed (platform admins).
    any_tenant: bool,
    tenant: String,
    actor: String,
    action: String,
    from: String,
    to: String,
    entries: Vec<EntryRow>,
    /// The link to the next (older) page, with the same filters.
    older: Option<String>,
}

/// A bound from the form: a day's start (or with `end`, the next day's start), or a time.
fn bound(raw: &str, end: bool) -> Result<Option<i64>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(day) = time::Date::parse(raw, format) {
        let day = if end { day.next_day().unwrap_or(day) } else { day };
        return Ok(Some(day.midnight().assume_utc().unix_timestamp() * 1000));
    }
    parse_time(raw).map(Some)
}

/// Management changes, newest first: every tenant's for a platform admin, the principal's own
/// tenant's for a tenant admin. Requires: platform admin, or admin.
#[get("/admin/audit")]
async fn page(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, PageError> {
    let q = query.into_inner();
    // A tenant admin's own tenant unless the query names one (another tenant's is a 404).
    let any_tenant = matches!(session.principal.scope, Scope::PlatformAdmin);
    let tenant_name = match (&session.principal.scope, q.tenant.trim()) {
        (Scope::Tenant { tenant, .. }, "") => tenant.name.to_string(),
        (_, named) => named.to_owned(),
    };
    let tenant_id = if tenant_name.is_empty() {
        None
    } else {
        Some(session.principal.tenant(&state.registry, &tenant_name, Role::Admin).await?.id)
    };
    let nonempty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let filter = AuditFilter {
        tenant_id,
        actor: nonempty(&q.actor),
        action: nonempty(&q.action),
        from: bound(&q.from, false)?,
        to: bound(&q.to, true)?,
    };
    let found = state.registry.audit_entries(&filter, &PageRequest::parse(Some(50), q.cursor.as_deref())?).await?;
    let actors = found.data.iter().map(|e| e.actor.as_str());
    let names = KeyNames::look_up(&state.registry, filter.tenant_id.as_deref(), actors).await?;
    let json = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
    let older = found.next_cursor.map(|cursor| {
        let fields = [
            ("tenant", tenant_name.as_str()),
            ("actor", &q.actor),
            ("action", &q.action),
            ("from", &q.from),
            ("to", &q.to),
            ("cursor", &cursor),
        ];
        let query: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect();
        format!("/admin/audit?{}", query.join("&"))
    });
    let view = AuditPage {
        chrome: session.chrome("audit"),
        any_tenant,
        entries: found
            .data
            .into_iter()
            .map(|e| EntryRow {
                at: when(e.at),
                actor: names.actor(&e.actor),
                tenant: e.tenant.unwrap_or_default(),
                action: e.action,
                target: e.target,
                source_ip: e.source_ip.unwrap_or_default(),
                before: json(e.before),
                after: json(e.after),
            })
            .collect(),
        tenant: tenant_name,
        actor: q.actor,
        action: q.action,
        from: q.from,
        to: q.to,
        older,
    };
    html(&view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_bound_whole_days() {
        assert_eq!(bound("", false).expect("blank"), None);
        assert_eq!(bound("2026-11-27", false).expect("a day"), Some(1_795_737_600_000));
        assert_eq!(bound("2026-11-27", true).expect("a day"), Some(1_795_737_600_000 + 86_400_000));
        assert_eq!(bound("2026-11-27T10:00:00Z", false).expect("a time"), Some(1_795_773_600_000));
        assert!(bound("yesterday", false).is_err());
    }
}
