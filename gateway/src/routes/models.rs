use actix_web::{HttpResponse, delete, get, patch, post, web};
use registry::models::{ModelFilter, ModelPatch};
use registry::names::{ModelName, Role, Task};
use registry::page::PageRequest;
use serde::Deserialize;
use serde_json::json;

use super::model_in;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateModel {
    name: String,
    task: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// Requires: developer.
#[utoipa::path(tag = "models", request_body = CreateModel, responses((status = 201, body = registry::models::Model)))]
#[post("/api/v1/tenants/{tenant}/models")]
async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Json<CreateModel>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.tenant(&state.registry, &path, Role::Developer).await?;
    let name = super::parse(ModelName::parse(&body.name))?;
    let task = super::parse(Task::parse(&body.task))?;
    let model =
        state.registry.create_model(&principal.actor(), &tenant.id, &name, task, &body.description, &body.tags).await?;
    Ok(HttpResponse::Created().json(model))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    task: Option<String>,
    tag: Option<String>,
    name_prefix: Option<String>,
}

/// Models by name; `?task=`, `?tag=`, `?name_prefix=` filter. Requires: viewer.
#[utoipa::path(tag = "models", params(ListQuery), responses((status = 200, body = registry::page::Page<registry::models::Model>)))]
#[get("/api/v1/tenants/{tenant}/models")]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.tenant(&state.registry, &path, Role::Viewer).await?;
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
struct PatchModel {
    description: Option<String>,
    tags: Option<Vec<String>>,
}

/// Changes the description and/or tags. Requires: developer.
#[utoipa::path(tag = "models", request_body = PatchModel, responses((status = 200, body = registry::models::Model)))]
#[patch("/api/v1/tenants/{tenant}/models/{model}")]
async fn update(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Json<PatchModel>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    let body = body.into_inner();
    let patch = ModelPatch { description: body.description, tags: body.tags };
    Ok(HttpResponse::Ok().json(state.registry.update_model(&principal.actor(), &model, patch).await?))
}

/// The model with its aliases. Requires: viewer.
#[utoipa::path(tag = "models", responses((status = 200, body = crate::routes::schemas::ModelWithAliases)))]
#[get("/api/v1/tenants/{tenant}/models/{model}")]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Viewer).await?;
    let aliases = state.registry.aliases(&model).await?;
    let mut answer = serde_json::to_value(&model).map_err(ApiError::internal)?;
    answer["aliases"] = json!(aliases);
    Ok(HttpResponse::Ok().json(answer))
}

/// Deletes a model (refused while it has aliases); its versions are archived. Requires: developer.
#[utoipa::path(tag = "models", responses((status = 204, description = "Deleted")))]
#[delete("/api/v1/tenants/{tenant}/models/{model}")]
async fn remove(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    state.registry.delete_model(&principal.actor(), &model).await?;
    Ok(HttpResponse::NoContent().finish())
}
