use actix_web::{HttpResponse, get, post, web};
use registry::names::TenantSlug;
use serde::Deserialize;

use super::PageQuery;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
}

/// Requires: platform admin.
#[post("/api/v1/tenants")]
async fn create(
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
#[get("/api/v1/tenants")]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    Ok(HttpResponse::Ok().json(state.registry.list_tenants(&query.request()?).await?))
}
