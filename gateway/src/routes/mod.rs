//! The management and inference APIs' handlers, one file per resource or protocol. Which
//! handler serves which route, and what each route requires, is said once, in `table.rs`;
//! inference handlers are thin adapters of the core in `crate::inference`.

mod admin;
mod aliases;
mod audit;
mod auth_token;
mod classifications;
mod completions;
mod extract;
pub(crate) mod files;
mod health;
pub(crate) mod hf;
mod input;
mod keys;
pub mod kserve;
mod kserve_generate;
mod models;
mod openai;
mod openapi;
pub(crate) mod runners;
mod schemas;
pub mod table;
pub(crate) mod tenants;
mod uploads;
mod usage;
mod versions;

use crate::error::{ApiError, ErrorCode};

pub(crate) use extract::Matched;
pub(crate) use table::configure;

/// A JSON list envelope, as every list endpoint answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// `?limit=&cursor=` of every paginated list.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl PageQuery {
    fn request(&self) -> Result<registry::page::PageRequest, ApiError> {
        parse(registry::page::PageRequest::parse(self.limit, self.cursor.as_deref()))
    }
}

/// A JSON body that may be left out (empty means the defaults); malformed JSON is still a 400.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the JSON body is invalid: {e}")))
}

fn parse<T>(parsed: Result<T, registry::Error>) -> Result<T, ApiError> {
    parsed.map_err(ApiError::from)
}

/// A time from a query: RFC 3339 (`2026-11-27T10:00:00Z`) or seconds since the epoch; answers
/// milliseconds since the epoch.
pub(crate) fn parse_time(raw: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{raw:?} is not a time: use RFC 3339 or seconds since the epoch"),
            )
        })
}

/// A version number from a path: anything but a positive integer is "not found".
pub(crate) fn version_number(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| ApiError::not_found(format!("version {raw:?} not found")))
}

/// The model a path names, if the principal may act on it with at least `need`.
/// An unparseable name is "not found", like a missing one.
pub(crate) async fn model_in(
    state: &crate::AppState,
    principal: &crate::auth::Principal,
    tenant: &str,
    model: &str,
    need: registry::names::Role,
) -> Result<registry::models::Model, ApiError> {
    let tenant = principal.tenant(&state.registry, tenant, need).await?;
    model_of(state, &tenant, model).await
}

/// The model `raw` names in `tenant`; an unparseable name is "not found", like a missing one.
pub(crate) async fn model_of(
    state: &crate::AppState,
    tenant: &registry::tenants::Tenant,
    raw: &str,
) -> Result<registry::models::Model, ApiError> {
    let name =
        registry::names::ModelName::parse(raw).map_err(|_| ApiError::not_found(format!("model {raw:?} not found")))?;
    Ok(state.registry.model(&tenant.id, &name).await?)
}
