use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    /// Keep what was used more recently than this; default: the configured grace period.
    grace_secs: Option<u64>,
    /// Fail drafts older than this; default: the configured draft lifetime.
    draft_ttl_secs: Option<u64>,
}

/// Runs garbage collection now and reports what it deleted. Requires: platform admin.
#[utoipa::path(post, path = "/api/v1/admin/gc", tag = "admin", request_body(content = Option<GcRequest>, content_type = "application/json"), responses((status = 200, body = registry::gc::GcReport)))]
pub(super) async fn gc(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let body: GcRequest = super::optional_json(&body)?;
    let grace = body.grace_secs.map_or(state.gc_grace, Duration::from_secs);
    let draft_ttl = body.draft_ttl_secs.map_or(state.draft_ttl, Duration::from_secs);
    Ok(HttpResponse::Ok().json(state.registry.collect_garbage(grace, draft_ttl).await?))
}

/// Lifts a version's quarantine and forgets its strikes (audited as
/// `version.quarantine.clear`); answers what was lifted, 404 when the version is not
/// quarantined. Requires: platform admin.
#[utoipa::path(delete, path = "/api/v1/admin/quarantine/{version_id}", tag = "admin", params(("version_id" = String, Path, description = "The version's id, as its `quarantine.version_id` shows it")), responses((status = 200, body = registry::quarantine::Quarantine), (status = 404, description = "Not quarantined", body = crate::routes::schemas::ErrorBody)))]
pub(super) async fn clear_quarantine(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require_platform_admin()?;
    let lifted = state.registry.clear_quarantine(&principal.actor(), &path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(lifted))
}
