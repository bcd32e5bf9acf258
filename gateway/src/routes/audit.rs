//! The audit log, read-only: no route changes or deletes an entry.

use actix_web::{HttpResponse, web};
use registry::audit::AuditFilter;
use registry::names::Role;
use serde::Deserialize;

use super::extract::TenantPath;
use super::{PageQuery, parse_time};
use crate::AppState;
use crate::auth::{Principal, Scope};
use crate::error::ApiError;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// A tenant's name.
    tenant: Option<String>,
    actor: Option<String>,
    /// An action, or a prefix ending in `*`.
    action: Option<String>,
    /// RFC 3339 or seconds since the epoch.
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The tenant's management changes, newest first. Requires: tenant admin.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit", params(TenantPath, super::PageQuery), responses((status = 200, body = registry::page::Page<registry::audit::AuditRecord>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    TenantPath(tenant): TenantPath,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = AuditFilter { tenant_id: Some(tenant.id), ..AuditFilter::default() };
    Ok(HttpResponse::Ok().json(state.registry.audit_entries(&filter, &query.request()?).await?))
}

/// Management changes filtered by tenant, actor, action and time, newest first: a platform
/// admin sees every tenant's, a tenant admin only their own. Requires: platform admin, or admin.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, body = registry::page::Page<registry::audit::AuditRecord>)))]
pub(super) async fn search(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let tenant_id = match (&principal.scope, &query.tenant) {
        (Scope::PlatformAdmin, None) => None,
        (_, Some(name)) => Some(principal.tenant(&state.registry, name, Role::Admin).await?.id),
        (Scope::Tenant { .. }, None) => Some(principal.own_tenant(Role::Admin)?.id.clone()),
    };
    let filter = AuditFilter {
        tenant_id,
        actor: query.actor,
        action: query.action,
        from: query.from.as_deref().map(parse_time).transpose()?,
        to: query.to.as_deref().map(parse_time).transpose()?,
    };
    let page = PageQuery { limit: query.limit, cursor: query.cursor }.request()?;
    Ok(HttpResponse::Ok().json(state.registry.audit_entries(&filter, &page).await?))
}
