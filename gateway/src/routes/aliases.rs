use actix_web::{HttpResponse, put, web};
use registry::names::{AliasName, Role};
use serde::Deserialize;

use super::model_in;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetAlias {
    version: i64,
}

/// Points an alias at a ready version (atomically, audited). Requires: developer.
#[put("/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}")]
async fn put(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
    body: web::Json<SetAlias>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, alias) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    let alias = super::parse(AliasName::parse(&alias))?;
    let alias = state.registry.set_alias(&principal.actor(), &model, &alias, body.version).await?;
    Ok(HttpResponse::Ok().json(alias))
}
