use actix_web::{HttpResponse, web};
use registry::keys::KeyRole;
use registry::limits::Limits;
use registry::names::Role;
use serde::Deserialize;
use serde_json::json;

use super::PageQuery;
use super::extract::{IdSegment, TenantPath};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    name: String,
    role: Role,
    /// Seconds from now until the key stops working.
    #[serde(default)]
    expires_in: Option<u64>,
    /// The key's own request limits (the tenant's apply as well; the tightest wins).
    #[serde(default)]
    limits: Limits,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateKey {
    limits: Limits,
}

/// Creates a key; its secret is in this answer and nowhere else, ever. Requires: tenant admin.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/keys", params(TenantPath), tag = "keys", request_body = CreateKey, responses((status = 201, body = crate::routes::schemas::CreatedKey)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    body: web::Json<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    let expires_at = match body.expires_in {
        Some(0) => {
            return Err(ApiError::invalid("expires_in must be at least 1 second"));
        }
        Some(secs) => {
            Some(registry::db::now_ms().saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)))
        }
        None => None,
    };
    let (key, secret) = state
        .registry
        .create_key(
            &principal.actor(),
            Some(&tenant.id),
            &body.name,
            KeyRole::Tenant(body.role),
            expires_at,
            body.limits,
        )
        .await?;
    let mut answer = serde_json::to_value(&key).map_err(ApiError::internal)?;
    answer["key"] = json!(secret);
    answer["tenant"] = json!(tenant.name);
    Ok(HttpResponse::Created().json(answer))
}

/// Lists keys without secrets. Requires: tenant admin.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/keys", tag = "keys", params(TenantPath, super::PageQuery), responses((status = 200, body = registry::page::Page<registry::keys::ApiKey>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    TenantPath(tenant): TenantPath,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.registry.list_keys(&tenant.id, &query.request()?).await?))
}

/// Revokes a key at once. Requires: tenant admin.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/keys/{id}", params(TenantPath, IdSegment), tag = "keys", responses((status = 200, body = registry::keys::ApiKey)))]
pub(super) async fn revoke(
    state: web::Data<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    segment: web::Path<IdSegment>,
) -> Result<HttpResponse, ApiError> {
    let id = segment.into_inner().id;
    let key = state.registry.revoke_key(&principal.actor(), &tenant.id, &id).await?;
    state.auth.invalidate();
    Ok(HttpResponse::Ok().json(key))
}

/// Sets a key's request limits (null lifts one). Requires: tenant admin.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/keys/{id}", params(TenantPath, IdSegment), tag = "keys", request_body = UpdateKey, responses((status = 200, body = registry::keys::ApiKey)))]
pub(super) async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    segment: web::Path<IdSegment>,
    body: web::Json<UpdateKey>,
) -> Result<HttpResponse, ApiError> {
    let id = segment.into_inner().id;
    let key = state.registry.set_key_limits(&principal.actor(), &tenant.id, &id, body.limits).await?;
    state.auth.invalidate();
    Ok(HttpResponse::Ok().json(key))
}
