use actix_web::{HttpResponse, get, web};
use registry::names::Role;

use super::PageQuery;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// The tenant's management changes, newest first. Requires: tenant admin.
#[get("/api/v1/tenants/{tenant}/audit")]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.tenant(&state.registry, &path, Role::Admin).await?;
    Ok(HttpResponse::Ok().json(state.registry.audit_entries(&tenant.id, &query.request()?).await?))
}
