//! Every route, with what it requires stated in its handler.
//!
//! | route | requires |
//! | --- | --- |
//! | `GET /healthz`, `GET /readyz` | nothing |
//! | `POST /api/v1/auth/token` | an API key (not a token) |
//! | `POST/GET /api/v1/tenants`, `PUT .../quotas`, `POST /api/v1/admin/gc`, `DELETE /api/v1/admin/quarantine/{version_id}` | platform admin |
//! | `POST/GET/DELETE .../keys`, `GET .../audit` | tenant admin |
//! | `GET` models, versions, files | viewer |
//! | `POST` models, versions, `PUT` files, commit, archive, `PUT`/`DELETE` aliases, `DELETE` models | developer |
//! | `/hf/...` (Hugging Face Hub–compatible downloads) | viewer |
//! | `/v1/models`, `/v1/embeddings` | invoker (tenant key) |

mod admin;
mod aliases;
mod audit;
mod auth_token;
mod classifications;
mod completions;
pub(crate) mod files;
mod health;
pub(crate) mod hf;
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

use actix_web::web;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // actix tries routes in this order, matching every parameterised one with a regex: the
    // inference routes, the hot path, come first.
    cfg.service(openai::embeddings)
        .service(completions::chat_completions)
        .service(completions::completions)
        .service(classifications::classifications)
        .service(kserve::model_infer)
        .service(kserve::version_infer)
        .service(health::healthz)
        .service(health::readyz)
        .service(auth_token::issue)
        .service(auth_token::jwks)
        .service(auth_token::whoami)
        .service(admin::gc)
        .service(admin::clear_quarantine)
        .service(runners::list)
        .service(runners::load)
        .service(runners::unload)
        .service(runners::pin)
        .service(tenants::create)
        .service(tenants::list)
        .service(tenants::quotas)
        .service(tenants::set_quotas)
        .service(tenants::suspend)
        .service(tenants::resume)
        .service(keys::create)
        .service(keys::list)
        .service(keys::revoke)
        .service(keys::update)
        .service(models::create)
        .service(models::list)
        .service(models::get)
        .service(versions::create)
        .service(versions::list)
        .service(versions::get)
        .service(versions::commit)
        .service(files::put)
        .service(files::get)
        .service(uploads::start)
        .service(uploads::list)
        .service(uploads::status)
        .service(uploads::chunk)
        .service(uploads::complete)
        .service(uploads::abort)
        .service(aliases::put)
        .service(aliases::list)
        .service(aliases::history)
        .service(aliases::remove)
        .service(versions::archive)
        .service(models::remove)
        .service(models::update)
        .service(audit::list)
        .service(audit::search)
        .service(usage::usage)
        .service(hf::resolve)
        .service(hf::info)
        .service(hf::info_main)
        .service(hf::tree)
        .service(kserve::live)
        .service(kserve::ready)
        .service(kserve::server)
        .service(kserve::model_metadata)
        .service(kserve::version_metadata)
        .service(kserve::model_ready)
        .service(kserve::version_ready)
        .service(kserve_generate::model_generate)
        .service(kserve_generate::version_generate)
        .service(kserve_generate::model_generate_stream)
        .service(kserve_generate::version_generate_stream)
        .service(openai::models)
        .service(openapi::serve);
}

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
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the JSON body is invalid: {e}")))
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
            ApiError::bad_request(
                "invalid_query",
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
    let name = registry::names::ModelName::parse(model)
        .map_err(|_| ApiError::not_found(format!("model {model:?} not found")))?;
    Ok(state.registry.model(&tenant.id, &name).await?)
}
