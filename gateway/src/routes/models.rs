use actix_web::{HttpResponse, delete, get, post, web};
use registry::names::{ModelName, Role, Task};
use serde::Deserialize;
use serde_json::json;

use super::{List, model_in};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateModel {
    name: String,
    task: String,
    #[serde(default)]
    description: String,
}

/// Requires: developer.
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
    let model = state.registry.create_model(&principal.actor(), &tenant.id, &name, task, &body.description).await?;
    Ok(HttpResponse::Created().json(model))
}

/// Requires: viewer.
#[get("/api/v1/tenants/{tenant}/models")]
async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.tenant(&state.registry, &path, Role::Viewer).await?;
    Ok(HttpResponse::Ok().json(List { data: state.registry.list_models(&tenant.id).await? }))
}

/// The model with its aliases. Requires: viewer.
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
