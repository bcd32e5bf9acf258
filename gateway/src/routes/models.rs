use actix_web::{HttpResponse, web};
use registry::models::{ModelFilter, ModelPatch};
use registry::names::{ModelName, Task};
use registry::page::PageRequest;
use serde::Deserialize;
use serde_json::json;

use super::extract::{ModelPath, TenantPath};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateModel {
    name: String,
    task: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// Requires: developer.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/models", params(TenantPath), tag = "models", request_body = CreateModel, responses((status = 201, body = registry::models::Model)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    body: web::Json<CreateModel>,
) -> Result<HttpResponse, ApiError> {
    let name = super::parse(ModelName::parse(&body.name))?;
    let task = super::parse(Task::parse(&body.task))?;
    let model =
        state.registry.create_model(&principal.actor(), &tenant.id, &name, task, &body.description, &body.tags).await?;
    Ok(HttpResponse::Created().json(model))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    task: Option<String>,
    tag: Option<String>,
    name_prefix: Option<String>,
}

/// Models by name; `?task=`, `?tag=`, `?name_prefix=` filter. Requires: viewer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models", tag = "models", params(TenantPath, ListQuery), responses((status = 200, body = registry::page::Page<registry::models::Model>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    TenantPath(tenant): TenantPath,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = super::parse(PageRequest::parse(query.limit, query.cursor.as_deref()))?;
    let filter = ModelFilter {
        task: query.task.as_deref().map(Task::parse).transpose().map_err(ApiError::from)?,
        tag: query.tag,
        name_prefix: query.name_prefix,
    };
    Ok(HttpResponse::Ok().json(state.registry.list_models(&tenant.id, &filter, &page).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchModel {
    description: Option<String>,
    tags: Option<Vec<String>>,
}

/// Changes the description and/or tags. Requires: developer.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/models/{model}", params(ModelPath), tag = "models", request_body = PatchModel, responses((status = 200, body = registry::models::Model)))]
pub(super) async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    ModelPath { model, .. }: ModelPath,
    body: web::Json<PatchModel>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let patch = ModelPatch { description: body.description, tags: body.tags };
    Ok(HttpResponse::Ok().json(state.registry.update_model(&principal.actor(), &model, patch).await?))
}

/// The model with its aliases. Requires: viewer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}", params(ModelPath), tag = "models", responses((status = 200, body = crate::routes::schemas::ModelWithAliases)))]
pub(super) async fn get(
    state: web::Data<AppState>,
    ModelPath { model, .. }: ModelPath,
) -> Result<HttpResponse, ApiError> {
    let aliases = state.registry.aliases(&model).await?;
    let mut answer = serde_json::to_value(&model).map_err(ApiError::internal)?;
    answer["aliases"] = json!(aliases);
    Ok(HttpResponse::Ok().json(answer))
}

/// Deletes a model (refused while it has aliases); its versions are archived. Requires: developer.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/models/{model}", params(ModelPath), tag = "models", responses((status = 204, description = "Deleted")))]
pub(super) async fn remove(
    state: web::Data<AppState>,
    principal: Principal,
    ModelPath { model, .. }: ModelPath,
) -> Result<HttpResponse, ApiError> {
    state.registry.delete_model(&principal.actor(), &model).await?;
    Ok(HttpResponse::NoContent().finish())
}
