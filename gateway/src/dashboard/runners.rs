//! The runners, for platform admins: health, device, memory used against the budget, cache
//! counts, every loaded model with its queue; load, unload and pin.

use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use serde::Deserialize;

use super::view::{Chrome, Session, bytes};
use super::{PageError, html, see_other};
use crate::AppState;
use crate::error::ApiError;
use crate::routes::runners::ready_version;

struct LoadedRow {
    version_id: String,
    name: String,
    memory: String,
    pinned: bool,
    in_flight: u64,
    requests: u64,
    batches: u64,
    load_ms: u64,
}

struct RunnerCard {
    address: String,
    healthy: bool,
    error: String,
    device: String,
    used: String,
    budget: String,
    used_bytes: u64,
    budget_bytes: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
    models: Vec<LoadedRow>,
}

#[derive(Template)]
#[template(path = "runners.html")]
struct RunnersPage {
    chrome: Chrome,
    runners: Vec<RunnerCard>,
}

/// Every runner and what it holds. Requires: platform admin.
#[get("/admin/runners")]
async fn page(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    let runners = state
        .runners
        .statuses()
        .await
        .into_iter()
        .map(|r| match r.status {
            Ok(s) => RunnerCard {
                address: r.address,
                healthy: !r.circuit_open,
                error: if r.circuit_open { "circuit open after repeated failures".into() } else { String::new() },
                device: s.device,
                used: bytes(s.memory_used_bytes),
                budget: bytes(s.memory_budget_bytes),
                used_bytes: s.memory_used_bytes,
                budget_bytes: s.memory_budget_bytes.max(1),
                hits: s.cache_hits,
                misses: s.cache_misses,
                evictions: s.cache_evictions,
                models: s
                    .loaded
                    .into_iter()
                    .map(|m| LoadedRow {
                        version_id: m.version_id,
                        name: m.display_name,
                        memory: bytes(m.memory_bytes),
                        pinned: m.pinned,
                        in_flight: m.in_flight,
                        requests: m.requests_total,
                        batches: m.batches_total,
                        load_ms: m.load_ms,
                    })
                    .collect(),
            },
            Err(e) => RunnerCard {
                address: r.address,
                healthy: false,
                error: e.message().to_owned(),
                device: String::new(),
                used: String::new(),
                budget: String::new(),
                used_bytes: 0,
                budget_bytes: 1,
                hits: 0,
                misses: 0,
                evictions: 0,
                models: Vec::new(),
            },
        })
        .collect();
    html(&RunnersPage { chrome: session.chrome("runners"), runners })
}

#[derive(Deserialize)]
struct LoadForm {
    tenant: String,
    model: String,
    version: String,
    #[serde(default)]
    pin: Option<String>,
}

/// Loads a ready version on the runner its traffic goes to. Requires: platform admin.
#[post("/admin/runners/load")]
async fn load(
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<LoadForm>,
) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    let LoadForm { tenant, model, version, pin: pinned } = form.into_inner();
    let spec = ready_version(&state, &session.principal, &(tenant, model, version)).await?;
    state.runners.load(spec, pinned.is_some()).await?;
    Ok(see_other("/admin/runners"))
}

#[derive(Deserialize)]
struct VersionForm {
    version_id: String,
    /// For pin: `true` pins, anything else unpins.
    #[serde(default)]
    pinned: Option<String>,
}

/// Unloads a version wherever it is idle. Requires: platform admin.
#[post("/admin/runners/unload")]
async fn unload(
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<VersionForm>,
) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    reached(state.runners.unload(&form.version_id).await)?;
    Ok(see_other("/admin/runners"))
}

/// Pins or unpins a version wherever it is loaded. Requires: platform admin.
#[post("/admin/runners/pin")]
async fn pin(
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<VersionForm>,
) -> Result<HttpResponse, PageError> {
    session.principal.require_platform_admin()?;
    reached(state.runners.pin(&form.version_id, form.pinned.as_deref() == Some("true")).await)?;
    Ok(see_other("/admin/runners"))
}

/// An error when no runner could be told (one that answered is enough: the others may be down).
fn reached(answers: Vec<(String, Result<bool, tonic::Status>)>) -> Result<(), PageError> {
    let mut failure = None;
    for (_, answer) in answers {
        match answer {
            Ok(_) => return Ok(()),
            Err(status) => failure = Some(status),
        }
    }
    failure.map_or(Ok(()), |status| Err(ApiError::from(status).into()))
}
