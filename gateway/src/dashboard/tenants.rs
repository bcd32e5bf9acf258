//! Tenants: the list and creation (platform admins), a tenant's page with its quotas, and
//! suspending or resuming it.

use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use registry::limits::Limits;
use registry::names::{Role, TenantSlug};
use registry::page::PageRequest;
use serde::Deserialize;

use super::view::{Chrome, Session, bytes, when, when_opt};
use super::{PageError, html, optional_number, see_other};
use crate::AppState;

struct TenantRow {
    name: String,
    created: String,
    suspended: bool,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    tenants: Vec<TenantRow>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    cursor: Option<String>,
}

/// Every tenant, by name. Requires: platform admin.
#[get("/admin/tenants")]
async fn list(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<Cursor>,
) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    let found = state.registry.list_tenants(&PageRequest::parse(Some(100), query.cursor.as_deref())?).await?;
    let tenants = found
        .data
        .into_iter()
        .map(|t| TenantRow {
            name: t.name.to_string(),
            created: when(t.created_at),
            suspended: t.suspended_at.is_some(),
        })
        .collect();
    html(&TenantsPage { chrome: session.chrome("tenants"), tenants, next_cursor: found.next_cursor })
}

#[derive(Deserialize)]
struct CreateForm {
    name: String,
}

/// Creates a tenant. Requires: platform admin.
#[post("/admin/tenants")]
async fn create(
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    let name = TenantSlug::parse(form.name.trim())?;
    let tenant = state.registry.create_tenant(&session.principal.actor(), &name).await?;
    Ok(see_other(&format!("/admin/tenants/{}", tenant.name)))
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    chrome: Chrome,
    name: String,
    created: String,
    suspended: String,
    used: String,
    used_bytes: i64,
    quota: String,
    /// The form's current values: blank is no limit.
    quota_input: String,
    rpm: String,
    concurrent: String,
    tpm: String,
    can_admin: bool,
}

fn field(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A tenant: state, storage against its quota, request limits. Requires: viewer.
#[get("/admin/tenants/{tenant}")]
async fn page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let tenant = session.principal.tenant(&state.registry, &path, Role::Viewer).await?;
    let storage = state.registry.storage_usage(&tenant.id).await?;
    let view = TenantPage {
        chrome: session.chrome("tenant"),
        name: tenant.name.to_string(),
        created: when(tenant.created_at),
        suspended: when_opt(tenant.suspended_at),
        used: bytes(u64::try_from(storage.used_bytes).unwrap_or(0)),
        used_bytes: storage.used_bytes,
        quota: storage.quota_bytes.map(|q| bytes(u64::try_from(q).unwrap_or(0))).unwrap_or_else(|| "no quota".into()),
        quota_input: field(storage.quota_bytes),
        rpm: field(tenant.limits.requests_per_minute),
        concurrent: field(tenant.limits.concurrent_requests),
        tpm: field(tenant.limits.tokens_per_minute),
        can_admin: session.can(Role::Admin),
    };
    html(&view)
}

#[derive(Deserialize)]
struct QuotasForm {
    storage_bytes: String,
    requests_per_minute: String,
    concurrent_requests: String,
    tokens_per_minute: String,
}

/// Sets the tenant's storage quota and request limits (blank: none). Requires: platform admin.
#[post("/admin/tenants/{tenant}/quotas")]
async fn quotas(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    form: web::Form<QuotasForm>,
) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    let tenant = session.principal.tenant(&state.registry, &path, Role::Admin).await?;
    let limits = Limits {
        requests_per_minute: optional_number("requests per minute", &form.requests_per_minute)?,
        concurrent_requests: optional_number("concurrent requests", &form.concurrent_requests)?,
        tokens_per_minute: optional_number("tokens per minute", &form.tokens_per_minute)?,
    };
    let quota = optional_number("storage quota", &form.storage_bytes)?;
    state.registry.set_quotas(&session.principal.actor(), &tenant, quota, limits).await?;
    state.auth.invalidate();
    Ok(see_other(&format!("/admin/tenants/{}", tenant.name)))
}

/// Suspends the tenant: its keys, tokens and sessions are refused. Requires: platform admin.
#[post("/admin/tenants/{tenant}/suspend")]
async fn suspend(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    set_suspended(&state, &session, &path, true).await
}

/// Resumes a suspended tenant. Requires: platform admin.
#[post("/admin/tenants/{tenant}/resume")]
async fn resume(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    set_suspended(&state, &session, &path, false).await
}

async fn set_suspended(
    state: &AppState,
    session: &Session,
    name: &str,
    suspended: bool,
) -> Result<HttpResponse, PageError> {
    let tenant = crate::routes::tenants::change_suspension(state, &session.principal, name, suspended).await?;
    Ok(see_other(&format!("/admin/tenants/{}", tenant.name)))
}
