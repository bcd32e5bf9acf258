use actix_web::{HttpResponse, get, web};
use registry::names::Role;
use serde::Deserialize;

use super::List;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// The tenant's management changes, newest first. Requires: tenant admin.
#[get("/api/v1/tenants/{tenant}/audit")]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.tenant(&state.registry, &path, Role::Admin).await?;
    if !(1..=1000).contains(&page.limit) {
        return Err(ApiError::bad_request("invalid_request", "limit must be between 1 and 1000"));
    }
    Ok(HttpResponse::Ok().json(List { data: state.registry.audit_entries(&tenant.id, page.limit).await? }))
}
