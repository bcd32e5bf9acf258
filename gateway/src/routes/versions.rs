use actix_web::{HttpResponse, get, post, web};
use registry::names::Role;

use registry::page::PageRequest;
use registry::versions::{NewVersion, VersionStatus};
use serde::Deserialize;

use super::{model_in, version_number};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateVersion {
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
    /// `model@N` of this tenant: the version this one was made from.
    derived_from: Option<String>,
}

/// Starts a new draft version (the body is optional). Requires: developer.
#[utoipa::path(tag = "versions", request_body(content = Option<CreateVersion>, content_type = "application/json"), responses((status = 201, body = registry::versions::Version)))]
#[post("/api/v1/tenants/{tenant}/models/{model}/versions")]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    let body: CreateVersion = super::optional_json(&body)?;
    let new = NewVersion { description: body.description, tags: body.tags, derived_from: body.derived_from };
    let version = state.registry.create_version(&principal.actor(), &model, new).await?;
    Ok(HttpResponse::Created().json(version))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    status: Option<String>,
}

/// Versions by number, `?status=` to keep one status. Requires: viewer.
#[utoipa::path(tag = "versions", params(ListQuery), responses((status = 200, body = registry::page::Page<registry::versions::Version>)))]
#[get("/api/v1/tenants/{tenant}/models/{model}/versions")]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Viewer).await?;
    let page = super::parse(PageRequest::parse(query.limit, query.cursor.as_deref()))?;
    let status = query.status.as_deref().map(VersionStatus::parse).transpose().map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(state.registry.list_versions(&model, status, &page).await?))
}

/// A version with its files, and `quarantine` (`{version_id, reason, since, strikes}`, or
/// null): why inference refuses it, when its calls took runners down. Requires: viewer.
#[utoipa::path(tag = "versions", responses((status = 200, body = crate::routes::schemas::VersionWithQuarantine)))]
#[get("/api/v1/tenants/{tenant}/models/{model}/versions/{version}")]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, version) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Viewer).await?;
    let version = state.registry.version(&model, version_number(&version)?).await?;
    let quarantine = state.registry.quarantine(&version.id).await?;
    let mut body = serde_json::to_value(&version).map_err(ApiError::internal)?;
    body["quarantine"] = serde_json::to_value(quarantine).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(body))
}

/// Validates the draft and makes it ready and immutable; 422 lists every problem. Requires: developer.
#[utoipa::path(tag = "versions", responses((status = 200, body = registry::versions::Version), (status = 422, description = "Validation failed: `details.problems` lists each", body = crate::routes::schemas::ErrorBody)))]
#[post("/api/v1/tenants/{tenant}/models/{model}/versions/{version}/commit")]
async fn commit(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, version) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    let version = state
        .registry
        .commit_version(&principal.actor(), &model, version_number(&version)?, state.runners.largest_budget())
        .await?;
    Ok(HttpResponse::Ok().json(version))
}

/// Archives a version: kept for audit, no longer callable; refused while an alias points at it.
/// Requires: developer.
#[utoipa::path(tag = "versions", responses((status = 200, body = registry::versions::Version)))]
#[post("/api/v1/tenants/{tenant}/models/{model}/versions/{version}/archive")]
async fn archive(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, version) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    let version = state.registry.archive_version(&principal.actor(), &model, version_number(&version)?).await?;
    Ok(HttpResponse::Ok().json(version))
}
