//! The runners, for platform admins: what each holds and does, and explicit load (preload,
//! optionally pinned), unload and pin of a model version.

use actix_web::{HttpResponse, get, post, web};
use registry::names::Role;
use registry::versions::VersionStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use super::openai::{Served, model_spec};
use super::{model_in, version_number};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// Each runner: reachable or not, device, memory used against its budget, cache counts, and
/// every loaded model with its counts. Requires: platform admin.
#[utoipa::path(tag = "admin", responses((status = 200, body = crate::routes::schemas::RunnerList)))]
#[get("/api/v1/admin/runners")]
async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let data: Vec<Value> = state
        .runners
        .statuses()
        .await
        .into_iter()
        .map(|r| match r.status {
            Ok(s) => json!({
                "address": r.address,
                "healthy": !r.circuit_open,
                "circuit_open": r.circuit_open,
                "device": s.device,
                "memory_used_bytes": s.memory_used_bytes,
                "memory_budget_bytes": s.memory_budget_bytes,
                "loads_total": s.loads_total,
                "cache": { "hits": s.cache_hits, "misses": s.cache_misses, "evictions": s.cache_evictions },
                "models": s.loaded.iter().map(|m| json!({
                    "version_id": m.version_id,
                    "name": m.display_name,
                    "memory_bytes": m.memory_bytes,
                    "pinned": m.pinned,
                    "in_flight": m.in_flight,
                    "load_ms": m.load_ms,
                    "requests_total": m.requests_total,
                    "inputs_total": m.inputs_total,
                    "batches_total": m.batches_total,
                    "queue_ms_total": m.queue_us_total / 1000,
                    "compute_ms_total": m.compute_us_total / 1000,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => {
                json!({ "address": r.address, "healthy": false, "circuit_open": r.circuit_open, "error": e.message() })
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoadBody {
    #[serde(default)]
    pin: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PinBody {
    pinned: bool,
}

/// The version's id and, for a load, what a runner needs: ready versions only.
pub(crate) async fn ready_version(
    state: &AppState,
    principal: &Principal,
    (tenant, model, version): &(String, String, String),
) -> Result<proto::v1::ModelSpec, ApiError> {
    let found = model_in(state, principal, tenant, model, Role::Admin).await?;
    let number = version_number(version)?;
    let v = state.registry.version(&found, number).await?;
    if v.status != VersionStatus::Ready {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "conflict",
            format!("version {model}@{number} is {}; only ready versions load", v.status.as_str()),
        ));
    }
    let tenant = principal.tenant(&state.registry, tenant, Role::Admin).await?;
    let mut served = Served { model: model.clone(), version: number, input_tokens: 0 };
    model_spec(state, &tenant, &format!("{model}@{number}"), found.task, &mut served).await
}

fn per_runner(results: Vec<(String, Result<bool, tonic::Status>)>, field: &str) -> Value {
    let data: Vec<Value> = results
        .into_iter()
        .map(|(address, r)| match r {
            Ok(b) => json!({ "address": address, field: b }),
            Err(e) => json!({ "address": address, "error": e.message() }),
        })
        .collect();
    json!({ "data": data })
}

/// Loads the version now on the runner its traffic goes to, pinned if asked. Requires:
/// platform admin.
#[utoipa::path(tag = "admin", request_body(content = Option<LoadBody>, content_type = "application/json"), responses((status = 200, body = crate::routes::schemas::Loaded)))]
#[post("/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/load")]
async fn load(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let body: LoadBody = super::optional_json(&body)?;
    let spec = ready_version(&state, &principal, &path).await?;
    let (runner, memory_bytes) = state.runners.load(spec, body.pin).await?;
    Ok(HttpResponse::Ok().json(json!({ "runner": runner, "memory_bytes": memory_bytes, "pinned": body.pin })))
}

/// Unloads the version from every runner where it is idle. Requires: platform admin.
#[utoipa::path(tag = "admin", responses((status = 200, body = crate::routes::schemas::PerRunner)))]
#[post("/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/unload")]
async fn unload(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let spec = ready_version(&state, &principal, &path).await?;
    Ok(HttpResponse::Ok().json(per_runner(state.runners.unload(&spec.version_id).await, "unloaded")))
}

/// Pins (`{"pinned": true}`) or unpins the version wherever it is loaded. Requires: platform
/// admin.
#[utoipa::path(tag = "admin", request_body = PinBody, responses((status = 200, body = crate::routes::schemas::PerRunner)))]
#[post("/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/pin")]
async fn pin(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let spec = ready_version(&state, &principal, &path).await?;
    Ok(HttpResponse::Ok().json(per_runner(state.runners.pin(&spec.version_id, body.pinned).await, "loaded")))
}
