//! The runners, for platform admins: what each holds and does, and explicit load (preload,
//! optionally pinned), unload and pin of a model version.

use actix_web::{HttpResponse, web};
use proto::v1::ModelSpec;
use registry::models::Model;
use registry::names::Role;
use registry::tenants::Tenant;
use registry::versions::VersionStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::VersionPath;
use super::{model_of, version_number};
use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};

/// Each runner: reachable or not, device, memory used against its budget, cache counts, and
/// every loaded model with its counts. Requires: platform admin.
#[utoipa::path(get, path = "/api/v1/admin/runners", tag = "admin", responses((status = 200, body = crate::routes::schemas::RunnerList)))]
pub(super) async fn list(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
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
pub(super) struct PinBody {
    pinned: bool,
}

/// What a runner needs to load a version: ready, not quarantined versions only.
async fn spec_to_load(state: &AppState, tenant: &Tenant, model: &Model, number: i64) -> Result<ModelSpec, ApiError> {
    let version = state.registry.version(model, number).await?;
    if version.status != VersionStatus::Ready {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("version {}@{number} is {}; only ready versions load", model.name, version.status.as_str()),
        ));
    }
    if let Some(quarantine) = state.registry.quarantine(&version.id).await? {
        return Err(registry::Error::Quarantined(Box::new(quarantine)).into());
    }
    Ok(crate::inference::spec(&state.registry, tenant, model, &version))
}

/// The same for a version named by (tenant, model, version), as the dashboard's forms name it.
pub(crate) async fn ready_version(
    state: &AppState,
    principal: &Principal,
    (tenant, model, version): &(String, String, String),
) -> Result<ModelSpec, ApiError> {
    let tenant = principal.tenant(&state.registry, tenant, Role::Admin).await?;
    let model = model_of(state, &tenant, model).await?;
    spec_to_load(state, &tenant, &model, version_number(version)?).await
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
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/load", params(VersionPath), tag = "admin", request_body(content = Option<LoadBody>, content_type = "application/json"), responses((status = 200, body = crate::routes::schemas::Loaded)))]
pub(super) async fn load(
    state: web::Data<AppState>,
    VersionPath { tenant, model, number }: VersionPath,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: LoadBody = super::optional_json(&body)?;
    let spec = spec_to_load(&state, &tenant, &model, number).await?;
    let (runner, memory_bytes) = state.runners.load(spec, body.pin).await?;
    Ok(HttpResponse::Ok().json(json!({ "runner": runner, "memory_bytes": memory_bytes, "pinned": body.pin })))
}

/// Unloads the version from every runner where it is idle. Requires: platform admin.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/unload", params(VersionPath), tag = "admin", responses((status = 200, body = crate::routes::schemas::PerRunner)))]
pub(super) async fn unload(
    state: web::Data<AppState>,
    VersionPath { tenant, model, number }: VersionPath,
) -> Result<HttpResponse, ApiError> {
    let spec = spec_to_load(&state, &tenant, &model, number).await?;
    Ok(HttpResponse::Ok().json(per_runner(state.runners.unload(&spec.version_id).await, "unloaded")))
}

/// Pins (`{"pinned": true}`) or unpins the version wherever it is loaded. Requires: platform
/// admin.
#[utoipa::path(post, path = "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/pin", params(VersionPath), tag = "admin", request_body = PinBody, responses((status = 200, body = crate::routes::schemas::PerRunner)))]
pub(super) async fn pin(
    state: web::Data<AppState>,
    VersionPath { tenant, model, number }: VersionPath,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let spec = spec_to_load(&state, &tenant, &model, number).await?;
    Ok(HttpResponse::Ok().json(per_runner(state.runners.pin(&spec.version_id, body.pinned).await, "loaded")))
}
