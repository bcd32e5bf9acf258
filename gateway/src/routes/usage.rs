//! Metered inference usage of a tenant, over time.

use actix_web::{HttpResponse, web};
use registry::usage::{GroupBy, Step};
use serde::Deserialize;
use serde_json::json;

use super::extract::TenantPath;
use super::{parse, parse_time};
use crate::AppState;
use crate::error::ApiError;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// RFC 3339 or seconds since the epoch; default: 24 steps before `to`.
    from: Option<String>,
    /// Default: now.
    to: Option<String>,
    /// `minute`, `hour` (default) or `day`.
    step: Option<String>,
    /// `model`, `version` or `key`; default: the whole tenant.
    group_by: Option<String>,
}

/// Requests, errors, tokens and latency per step. Requires: tenant admin.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/usage", tag = "usage", params(TenantPath, UsageQuery), responses((status = 200, body = crate::routes::schemas::UsageReport)))]
pub(super) async fn usage(
    state: web::Data<AppState>,
    TenantPath(tenant): TenantPath,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let step = parse(Step::parse(query.step.as_deref().unwrap_or("hour")))?;
    let group_by = query.group_by.as_deref().map(GroupBy::parse).transpose().map_err(ApiError::from)?;
    let step_ms = step.millis();
    let to = query.to.as_deref().map(parse_time).transpose()?.unwrap_or_else(|| registry::db::now_ms() + 1);
    let from = query.from.as_deref().map(parse_time).transpose()?.unwrap_or(to - 24 * step_ms);
    let data = state.registry.usage(Some(&tenant.id), from, to, step, group_by).await?;
    Ok(HttpResponse::Ok().json(json!({
        "tenant": tenant.name,
        "step": query.step.as_deref().unwrap_or("hour"),
        "group_by": query.group_by,
        "latency_buckets_ms": registry::usage::LATENCY_BOUNDS_MS,
        "data": data,
    })))
}
