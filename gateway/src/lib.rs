#![doc = include_str!("../README.md")]

pub mod auth;
pub mod body;
pub mod dashboard;
pub mod error;
pub mod inference;
pub mod limits;
pub mod metrics;
pub mod oidc;
pub mod resolver;
mod routes;
pub use routes::kserve::decode_infer;
pub use routes::table;
pub mod runners;
pub mod tokens;
pub mod trace;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use actix_web::HttpMessage as _;
use actix_web::ResponseError as _;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Server, Service as _, ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::middleware::Next;
use actix_web::{App, HttpServer, web};
use registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::auth::Authenticator;
use crate::error::{ApiError, ErrorCode};
use crate::runners::RunnerPool;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// gRPC addresses of the runners (`http://host:port`).
    pub runners: Vec<String>,
    /// Runner discovery, status polling, timeouts, failover.
    pub routing: runners::RoutingConfig,
    /// Mutual TLS with the runners.
    pub runner_tls: runners::RunnerTlsConfig,
    /// Lifetime of tokens from `POST /api/v1/auth/token`.
    pub token_ttl_secs: i64,
    /// PKCS#8 PEM Ed25519 key that signs tokens. `dev` generates and keeps one in its data folder.
    pub signing_key_file: Option<PathBuf>,
    /// Earlier signing keys (PEM, private or public) that still verify the tokens they signed.
    /// To rotate: make a new key the signing key, list the old one here, and drop it once
    /// `token_ttl_secs` has passed.
    pub previous_signing_key_files: Vec<PathBuf>,
    /// External identity providers whose tokens are accepted.
    pub oidc: Vec<oidc::OidcIssuer>,
    /// An issuer's key set is fetched again on an unknown `kid` at most this often.
    pub jwks_refresh_secs: u64,
    /// How long a key, its tenant and their state are cached: a revocation or a suspension
    /// made on another gateway takes effect within this.
    pub auth_cache_ttl_ms: u64,
    /// How long a resolved model reference is cached. Changes reach every gateway at once
    /// (Postgres NOTIFY); this bounds how stale one can be if an announcement is lost.
    pub resolve_cache_ttl_ms: u64,
    /// How often metered usage is written to the database.
    pub usage_flush_ms: u64,
    /// Largest JSON body accepted (file uploads stream and are not bound by this).
    pub max_json_bytes: usize,
    /// How often garbage collection runs (0: never on its own; `POST /api/v1/admin/gc` still works).
    pub gc_interval_secs: u64,
    /// Unreferenced blobs and staged uploads younger than this are kept.
    pub gc_grace_secs: u64,
    /// Longest life of a resumable upload session; garbage collection ends expired ones.
    pub upload_session_ttl_secs: u64,
    /// Drafts not committed within this are marked failed and their files collected.
    pub draft_ttl_secs: u64,
    /// A request body (an upload, JSON, a form) that sends nothing for this long ends with 408.
    pub body_idle_timeout_secs: u64,
    /// Memory for resumable chunks being received (each is held whole), all tenants together;
    /// one tenant takes at most a quarter. Past it, a chunk is refused with 429.
    pub chunk_buffer_mib: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            runners: vec!["http://127.0.0.1:50051".into()],
            routing: runners::RoutingConfig::default(),
            runner_tls: runners::RunnerTlsConfig::default(),
            token_ttl_secs: 900,
            signing_key_file: None,
            previous_signing_key_files: Vec::new(),
            oidc: Vec::new(),
            jwks_refresh_secs: 60,
            auth_cache_ttl_ms: 1000,
            resolve_cache_ttl_ms: 5000,
            usage_flush_ms: 1000,
            max_json_bytes: 16 * 1024 * 1024,
            gc_interval_secs: 3600,
            gc_grace_secs: 24 * 3600,
            upload_session_ttl_secs: 24 * 3600,
            draft_ttl_secs: 7 * 24 * 3600,
            body_idle_timeout_secs: 30,
            chunk_buffer_mib: 512,
        }
    }
}

/// What every request handler can reach.
pub struct AppState {
    pub registry: Registry,
    pub auth: Authenticator,
    pub limiter: std::sync::Arc<limits::Limiter>,
    pub usage: std::sync::Arc<usage::UsageMeter>,
    pub runners: RunnerPool,
    pub resolver: resolver::Resolver,
    /// The default grace period of garbage collection.
    pub gc_grace: std::time::Duration,
    pub upload_session_ttl: std::time::Duration,
    pub draft_ttl: std::time::Duration,
}

/// Runs garbage collection every `config.gc_interval_secs` until the task is dropped.
pub async fn collect_garbage_periodically(registry: Registry, config: GatewayConfig) {
    if config.gc_interval_secs == 0 {
        return;
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(config.gc_interval_secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let (grace, draft_ttl) = (
            std::time::Duration::from_secs(config.gc_grace_secs),
            std::time::Duration::from_secs(config.draft_ttl_secs),
        );
        if let Err(e) = registry.collect_garbage(grace, draft_ttl).await {
            tracing::warn!(error = %e, "garbage collection failed; it runs again at the next interval");
        }
    }
}

/// Starts the HTTP server on `listener`; the returned server runs until stopped.
pub fn serve(listener: std::net::TcpListener, state: AppState, config: &GatewayConfig) -> std::io::Result<Server> {
    // Runners' deaths are judged into the database every gateway reads (runners/containment.rs).
    state.runners.contain_with(state.registry.clone());
    let state = web::Data::new(state);
    let max_json = config.max_json_bytes;
    let body_limits = web::Data::new(body::BodyLimits::new(
        std::time::Duration::from_secs(config.body_idle_timeout_secs.max(1)),
        config.chunk_buffer_mib,
    ));
    let idle = body_limits.idle;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(body_limits.clone())
            .app_data(web::JsonConfig::default().limit(max_json).error_handler(|e, _| json_error(e).into()))
            .app_data(web::PayloadConfig::default().limit(max_json))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::new(ErrorCode::InvalidQuery, format!("invalid query string: {e}")).into()
            }))
            .wrap(actix_web::middleware::from_fn(authorize))
            .wrap_fn(move |mut req, srv| {
                let drained = body::idle_timeout(&mut req, idle);
                let started = Instant::now();
                let method = req.method().clone();
                let path = req.path().to_owned();
                // The pattern, not the path: one series per route, whatever the names in it.
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
                let had_body = body::has_body(req.headers());
                let mut context = trace::RequestContext::from_headers(req.headers());
                let span = tracing::info_span!(
                    "request",
                    request.id = %context.request_id,
                    trace.id = tracing::field::Empty,
                    http.method = %method,
                    http.route = %route,
                );
                context.link(&span);
                span.record("trace.id", tracing::field::display(context.trace_id()));
                let (request_id, traceparent) = (context.request_id.clone(), context.traceparent());
                let call = context.scope(srv.call(req)).instrument(span.clone());
                async move {
                    let mut res = call.await?;
                    body::close_if_answered_early(had_body, &drained, &mut res);
                    let status = res.status().as_u16();
                    let elapsed = started.elapsed();
                    let duration_ms = elapsed.as_millis() as u64;
                    let method_label = metrics::method_label(&method);
                    metrics::HTTP_REQUESTS.with_label_values(&[method_label, &route, &status.to_string()]).inc();
                    metrics::HTTP_DURATION.with_label_values(&[method_label, &route]).observe(elapsed.as_secs_f64());
                    span.in_scope(|| {
                        tracing::info!(http.method = %method, http.path = %path, http.status = status, duration_ms, "request");
                    });
                    let headers = res.headers_mut();
                    for (name, value) in [(trace::REQUEST_ID, request_id), (trace::TRACEPARENT, traceparent)] {
                        if let Ok(value) = actix_web::http::header::HeaderValue::try_from(value) {
                            headers.insert(actix_web::http::header::HeaderName::from_static(name), value);
                        }
                    }
                    Ok(res)
                }
            })
            .configure(routes::configure)
            .configure(dashboard::configure)
            .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::not_found("no such route")) }))
    })
    .listen(listener)?
    .disable_signals()
    // A client that closes its connection ends its request: the handler is dropped, and with it
    // the runner's stream, so a generation nobody waits for stops (non-streamed ones too).
    .h1_allow_half_closed(false)
    .shutdown_timeout(10)
    .run();
    Ok(server)
}

/// Enforces the route table before any handler runs: an unknown route is 404, a route's need
/// is checked against the authenticated principal, which handlers then take from the request.
async fn authorize(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if dashboard::is_page(req.path()) {
        // The dashboard's pages: the same checks, from the session cookie, answered in HTML.
        return match dashboard::admit(&mut req).await {
            Ok(renewed) => {
                let mut response = next.call(req).await?;
                if let Some(cookie) = renewed {
                    response.response_mut().add_cookie(&cookie)?;
                }
                Ok(response.map_into_left_body())
            }
            Err(page) => Ok(req.into_response(page).map_into_right_body()),
        };
    }
    let found = table::rule_for(req.method(), req.path());
    if let Some((rule, _)) = &found {
        req.extensions_mut().insert(routes::Matched(rule));
    }
    let checked = async {
        let (rule, captures) = found.ok_or_else(|| ApiError::not_found("no such route"))?;
        if rule.need == table::Need::Public {
            return Ok(None);
        }
        let state = req
            .app_data::<web::Data<AppState>>()
            .cloned()
            .ok_or_else(|| ApiError::internal(std::io::Error::other("application state is not registered (a bug)")))?;
        let principal = auth::authenticate(&state, req.request()).await?;
        table::check(rule, &principal, &captures)?;
        let permit = state.limiter.admit(&principal).await?;
        Ok::<_, ApiError>(Some((principal, permit)))
    }
    .await;
    match checked {
        Ok(admitted) => {
            let permit = admitted.map(|(principal, permit)| {
                req.extensions_mut().insert(principal);
                permit
            });
            let response = next.call(req).await.map(ServiceResponse::map_into_left_body);
            drop(permit);
            response
        }
        Err(e) => {
            // The Hub's clients read a missing repository from this header.
            let e = if req.path().starts_with("/hf/") { routes::hf::hub_error("RepoNotFound")(e) } else { e };
            // The Open Inference Protocol's clients read `{"error": "…"}`.
            let response =
                if req.path().starts_with("/v2") { routes::kserve::kserve_error(&e) } else { e.error_response() };
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

fn json_error(e: JsonPayloadError) -> ApiError {
    match e {
        JsonPayloadError::ContentType => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "send the body as Content-Type: application/json")
        }
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::new(ErrorCode::BodyTooLarge, format!("the JSON body exceeds {limit} bytes"))
        }
        JsonPayloadError::Payload(ref p) if let Some(idle) = body::idle_of(p) => body::body_timeout(idle),
        JsonPayloadError::Deserialize(e) => {
            ApiError::new(ErrorCode::InvalidJson, format!("the JSON body is invalid: {e}"))
        }
        e => ApiError::new(ErrorCode::InvalidJson, format!("the JSON body could not be read: {e}")),
    }
}

/// The text of docs/API.md between `<!-- {marker}:start -->` and its end marker: the tables
/// printed from the code, which tests keep equal to it.
#[cfg(test)]
pub(crate) fn api_docs_section(marker: &str) -> &'static str {
    let docs = include_str!("../../docs/API.md");
    let (open, close) = (format!("<!-- {marker}:start -->\n"), format!("<!-- {marker}:end -->"));
    let start = docs.find(&open).expect("start marker") + open.len();
    &docs[start..docs.find(&close).expect("end marker")]
}
