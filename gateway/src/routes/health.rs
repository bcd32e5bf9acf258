use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

/// The process is up. No auth.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = crate::routes::schemas::Health)))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database and the object store answer and at least one runner is reachable. No auth.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = crate::routes::schemas::Readiness), (status = 503, description = "A dependency is unavailable; `details` holds the checks", body = crate::routes::schemas::ErrorBody)))]
pub(super) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = state.registry.db().ping().await.is_ok();
    let storage = state.registry.storage().check().await.is_ok();
    let statuses = state.runners.statuses().await;
    let runners_up = statuses.iter().filter(|r| r.status.is_ok() && !r.circuit_open).count();
    let body = json!({
        "database": if database { "ok" } else { "unavailable" },
        "storage": if storage { "ok" } else { "unavailable" },
        "runners": { "reachable": runners_up, "configured": statuses.len() },
    });
    if database && storage && runners_up > 0 {
        Ok(HttpResponse::Ok().json(json!({ "status": "ready", "checks": body })))
    } else {
        Err(ApiError::unavailable(ErrorCode::NotReady, "not ready: a dependency is unavailable").with_details(body))
    }
}
