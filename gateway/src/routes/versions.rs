use actix_web::{HttpResponse, web};

use registry::page::PageRequest;
use registry::versions::{NewVersion, VersionStatus};
use serde::Deserialize;

use super::extract::{ModelPath, VersionPath};
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
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/models/{model}/versions", params(ModelPath), tag = "versions", request_body(content = Option<CreateVersion>, content_type = "application/json"), responses((status = 201, body = registry::versions::Version)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    ModelPath { model, .. }: ModelPath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: CreateVersion = super::optional_json(&body)?;
    let new = NewVersion { description: body.description, tags: body.tags, derived_from: body.derived_from };
    let version = state.registry.create_version(&principal.actor(), &model, new).await?;
    Ok(HttpResponse::Created().json(version))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    status: Option<String>,
}

/// Versions by number, `?status=` to keep one status. Requires: viewer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}/versions", tag = "versions", params(ModelPath, ListQuery), responses((status = 200, body = registry::page::Page<registry::versions::Version>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    ModelPath { model, .. }: ModelPath,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = super::parse(PageRequest::parse(query.limit, query.cursor.as_deref()))?;
    let status = query.status.as_deref().map(VersionStatus::parse).transpose().map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(state.registry.list_versions(&model, status, &page).await?))
}

/// A version with its files, and `quarantine` (`{version_id, reason, since, strikes}`, or
/// null): why inference refuses it, when its calls took runners down. Requires: viewer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}", params(VersionPath), tag = "versions", responses((status = 200, body = crate::routes::schemas::VersionWithQuarantine)))]
pub(super) async fn get(
    state: web::Data<AppState>,
    VersionPath { model, number, .. }: VersionPath,
) -> Result<HttpResponse, ApiError> {
    let version = state.registry.version(&model, number).await?;
    let quarantine = state.registry.quarantine(&version.id).await?;
    let mut body = serde_json::to_value(&version).map_err(ApiError::internal)?;
    body["quarantine"] = serde_json::to_value(quarantine).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(body))
}

/// Validates the draft and makes it ready and immutable; 422 lists every problem. Requires: developer.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/commit", params(VersionPath), tag = "versions", responses((status = 200, body = registry::versions::Version), (status = 422, description = "Validation failed: `details.problems` lists each", body = crate::routes::schemas::ErrorBody)))]
pub(super) async fn commit(
    state: web::Data<AppState>,
    principal: Principal,
    VersionPath { model, number, .. }: VersionPath,
) -> Result<HttpResponse, ApiError> {
    let version =
        state.registry.commit_version(&principal.actor(), &model, number, state.runners.largest_budget()).await?;
    Ok(HttpResponse::Ok().json(version))
}

/// Archives a version: kept for audit, no longer callable; refused while an alias points at it.
/// Requires: developer.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/archive", params(VersionPath), tag = "versions", responses((status = 200, body = registry::versions::Version)))]
pub(super) async fn archive(
    state: web::Data<AppState>,
    principal: Principal,
    VersionPath { model, number, .. }: VersionPath,
) -> Result<HttpResponse, ApiError> {
    let version = state.registry.archive_version(&principal.actor(), &model, number).await?;
    Ok(HttpResponse::Ok().json(version))
}
