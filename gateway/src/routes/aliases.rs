use actix_web::{HttpResponse, web};
use registry::aliases::AliasTarget;
use registry::names::AliasName;
use serde::Deserialize;

use super::List;
use super::extract::{AliasSegment, ModelPath};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// `{"version": 3}`, or `{"targets": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}]}`
/// for a canary split (weights sum to 100).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetAlias {
    version: Option<i64>,
    targets: Option<Vec<AliasTarget>>,
}

fn alias_name(raw: &str) -> Result<AliasName, ApiError> {
    AliasName::parse(raw).map_err(|_| ApiError::not_found(format!("alias {raw:?} not found")))
}

/// Points an alias at a ready version or splits it by weight (atomically, audited). Requires: developer.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}", params(ModelPath, AliasSegment), tag = "aliases", request_body = SetAlias, responses((status = 200, body = registry::aliases::Alias)))]
pub(super) async fn put(
    state: web::Data<AppState>,
    principal: Principal,
    ModelPath { model, .. }: ModelPath,
    segment: web::Path<AliasSegment>,
    body: web::Json<SetAlias>,
) -> Result<HttpResponse, ApiError> {
    let alias = segment.into_inner().alias;
    let alias = super::parse(AliasName::parse(&alias))?;
    let targets = match body.into_inner() {
        SetAlias { version: Some(version), targets: None } => vec![AliasTarget { version, weight: 100 }],
        SetAlias { version: None, targets: Some(targets) } => targets,
        _ => return Err(ApiError::invalid("send either \"version\" or \"targets\"")),
    };
    let alias = state.registry.set_alias(&principal.actor(), &model, &alias, &targets).await?;
    Ok(HttpResponse::Ok().json(alias))
}

/// Requires: viewer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}/aliases", params(ModelPath), tag = "aliases", responses((status = 200, body = super::List<registry::aliases::Alias>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    ModelPath { model, .. }: ModelPath,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(List { data: state.registry.aliases(&model).await? }))
}

/// Every move of the alias, newest first: who, when, from which targets to which. Requires: viewer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}/history", params(ModelPath, AliasSegment), tag = "aliases", responses((status = 200, body = super::List<registry::aliases::AliasMove>)))]
pub(super) async fn history(
    state: web::Data<AppState>,
    ModelPath { model, .. }: ModelPath,
    segment: web::Path<AliasSegment>,
) -> Result<HttpResponse, ApiError> {
    let alias = segment.into_inner().alias;
    Ok(HttpResponse::Ok().json(List { data: state.registry.alias_history(&model, &alias_name(&alias)?).await? }))
}

/// Requires: developer.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}", params(ModelPath, AliasSegment), tag = "aliases", responses((status = 204, description = "Deleted")))]
pub(super) async fn remove(
    state: web::Data<AppState>,
    principal: Principal,
    ModelPath { model, .. }: ModelPath,
    segment: web::Path<AliasSegment>,
) -> Result<HttpResponse, ApiError> {
    let alias = segment.into_inner().alias;
    state.registry.delete_alias(&principal.actor(), &model, &alias_name(&alias)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
