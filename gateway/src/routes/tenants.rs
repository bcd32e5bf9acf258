use actix_web::{HttpResponse, web};
use registry::limits::Limits;
use registry::names::{Role, TenantSlug};
use serde::Deserialize;

use super::PageQuery;
use super::extract::TenantPath;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    name: String,
}

/// Requires: platform admin.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant, responses((status = 201, body = registry::tenants::Tenant)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let name = super::parse(TenantSlug::parse(&body.name))?;
    let tenant = state.registry.create_tenant(&principal.actor(), &name).await?;
    Ok(HttpResponse::Created().json(tenant))
}

/// Requires: platform admin.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(super::PageQuery), responses((status = 200, body = registry::page::Page<registry::tenants::Tenant>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    Ok(HttpResponse::Ok().json(state.registry.list_tenants(&query.request()?).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetQuotas {
    /// Bytes of distinct files the tenant may store; null (or absent) lifts the limit.
    #[serde(default)]
    storage_bytes: Option<i64>,
    /// Request limits; each null (or absent) lifts it.
    #[serde(default)]
    requests_per_minute: Option<i64>,
    #[serde(default)]
    concurrent_requests: Option<i64>,
    #[serde(default)]
    tokens_per_minute: Option<i64>,
}

/// The tenant's limits and what it uses. Requires: tenant admin.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/quotas", params(TenantPath), tag = "tenants", responses((status = 200, body = crate::routes::schemas::Quotas)))]
pub(super) async fn quotas(
    state: web::Data<AppState>,
    TenantPath(tenant): TenantPath,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.registry.storage_usage(&tenant.id).await?))
}

/// Sets the tenant's limits. Requires: platform admin.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/quotas", params(TenantPath), tag = "tenants", request_body = SetQuotas, responses((status = 200, body = crate::routes::schemas::Quotas)))]
pub(super) async fn set_quotas(
    state: web::Data<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    body: web::Json<SetQuotas>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let limits = Limits {
        requests_per_minute: body.requests_per_minute,
        concurrent_requests: body.concurrent_requests,
        tokens_per_minute: body.tokens_per_minute,
    };
    let answer = state.registry.set_quotas(&principal.actor(), &tenant, body.storage_bytes, limits).await?;
    state.auth.invalidate();
    Ok(HttpResponse::Ok().json(answer))
}
/// Suspends the tenant: every key and token of it is refused (on every gateway within the
/// auth cache's lifetime) and its data is kept. Requires: platform admin.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/suspend", tag = "tenants", responses((status = 200, body = registry::tenants::Tenant)))]
pub(super) async fn suspend(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_suspended(&state, &principal, &path, true).await
}

/// Lifts a suspension. Requires: platform admin.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/resume", tag = "tenants", responses((status = 200, body = registry::tenants::Tenant)))]
pub(super) async fn resume(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_suspended(&state, &principal, &path, false).await
}

async fn set_suspended(
    state: &AppState,
    principal: &Principal,
    name: &str,
    suspended: bool,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(change_suspension(state, principal, name, suspended).await?))
}

/// Suspends or resumes a tenant and drops cached credentials, so its keys, tokens and
/// dashboard sessions are refused (or accepted) at once. Requires: platform admin.
pub(crate) async fn change_suspension(
    state: &AppState,
    principal: &Principal,
    name: &str,
    suspended: bool,
) -> Result<registry::tenants::Tenant, ApiError> {
    principal.require_platform_admin()?;
    let tenant = principal.tenant(&state.registry, name, Role::Admin).await?;
    let tenant = state.registry.set_suspended(&principal.actor(), &tenant, suspended).await?;
    state.auth.invalidate();
    Ok(tenant)
}
