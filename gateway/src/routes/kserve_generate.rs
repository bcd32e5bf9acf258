//! The Open Inference Protocol's generate extension (as Triton serves it): `generate` answers
//! `{"model_name", "model_version", "text_output"}` at once, `generate_stream` sends one
//! server-sent event of that shape per decoded piece. Sampling parameters may sit at the top
//! level or under `parameters`. Errors answer `{"error": "…"}`, in the stream as an event.

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use proto::v1::GenerateRequest;
use registry::names::Task;
use serde::Deserialize;
use serde_json::json;

use super::kserve::{answer, reference, stream_error};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::inference::{Call, SERVED_BY};

/// Generates this many tokens when the request sets no limit.
const DEFAULT_MAX_TOKENS: u32 = 64;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Parameters {
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    seed: Option<u64>,
    repetition_penalty: Option<f32>,
    stop: Option<Vec<String>>,
    /// Triton's clients send it; the route decides.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted for compatibility; the route decides whether to stream")]
    stream: Option<bool>,
}

struct GenerateBody {
    text_input: String,
    parameters: Parameters,
    top_level: Parameters,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(message)
}

impl GenerateBody {
    /// `text_input`, `parameters`, and any parameter at the top level; nothing else.
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let json = |e: serde_json::Error| invalid(format!("the JSON body is invalid: {e}"));
        let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).map_err(json)?;
        let text_input = match fields.remove("text_input") {
            Some(serde_json::Value::String(text)) => text,
            Some(_) => return Err(invalid("text_input must be a string")),
            None => return Err(invalid("text_input is required")),
        };
        let parameters = match fields.remove("parameters") {
            Some(p) => serde_json::from_value(p).map_err(|e| invalid(format!("parameters: {e}")))?,
            None => Parameters::default(),
        };
        let top_level = serde_json::from_value(serde_json::Value::Object(fields)).map_err(json)?;
        Ok(Self { text_input, parameters, top_level })
    }

    /// The runner's request; a parameter under `parameters` wins over the same at the top.
    fn request(self) -> Result<GenerateRequest, ApiError> {
        let (p, t) = (self.parameters, self.top_level);
        if self.text_input.is_empty() {
            return Err(invalid("text_input must not be empty"));
        }
        let max_tokens = p.max_tokens.or(t.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(invalid("max_tokens must be at least 1"));
        }
        let temperature = p.temperature.or(t.temperature);
        if temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(invalid("temperature must be between 0 and 2"));
        }
        let top_p = p.top_p.or(t.top_p);
        if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(invalid("top_p must be above 0 and at most 1"));
        }
        let stop = p.stop.or(t.stop).unwrap_or_default();
        if stop.len() > 4 || stop.iter().any(String::is_empty) {
            return Err(invalid("stop takes at most 4 non-empty sequences"));
        }
        Ok(GenerateRequest {
            model: None,
            prompt: self.text_input,
            messages: Vec::new(),
            max_tokens,
            temperature,
            top_p,
            top_k: p.top_k.or(t.top_k),
            seed: p.seed.or(t.seed),
            repetition_penalty: p.repetition_penalty.or(t.repetition_penalty),
            stop,
        })
    }
}

async fn generate(
    state: web::Data<AppState>,
    principal: Principal,
    model: String,
    version: Option<String>,
    body: web::Bytes,
    stream: bool,
) -> Result<HttpResponse, ApiError> {
    let request = GenerateBody::parse(&body)?.request()?;
    let requested = reference(&model, version.as_deref());
    let mut call = Call::start(&state, &principal, &requested)?;
    let target = call.resolve(&requested, Some(Task::Generation)).await?;
    let served_by = target.served_by();
    let model_version = call.version().to_string();
    let chunks = call.generate(target, request).await?;
    let shape = move |text: &str| json!({ "model_name": model, "model_version": model_version, "text_output": text });

    if !stream {
        let progress = chunks.finish().await?;
        return Ok(HttpResponse::Ok().insert_header((SERVED_BY, served_by)).json(shape(&progress.text)));
    }

    // The call rides with the stream: it is metered when the stream ends or is dropped with a
    // departed client (which also stops the generation).
    let events = futures::stream::unfold(Some(chunks), move |carried| {
        let shape = shape.clone();
        async move {
            let mut chunks = carried?;
            let event = match chunks.next().await {
                Some(Ok(chunk)) => {
                    let mut event = shape(&chunk.text);
                    if !chunk.finish_reason.is_empty() {
                        event["finish_reason"] = json!(chunk.finish_reason);
                        return Some((Ok(sse(&event)), None));
                    }
                    event
                }
                Some(Err(error)) => {
                    return Some((Ok(sse(&stream_error(&error))), None));
                }
                None => return None,
            };
            Some((Ok::<_, actix_web::Error>(sse(&event)), Some(chunks)))
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((SERVED_BY, served_by))
        .insert_header(("Cache-Control", "no-cache"))
        .content_type("text/event-stream")
        .streaming(events))
}

fn sse(event: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {event}\n\n"))
}

/// Generates text from `text_input`. Requires: invoker.
#[utoipa::path(post, path = "/v2/models/{model}/generate", tag = "kserve", request_body = crate::routes::schemas::KServeGenerateRequest, responses((status = 200, body = crate::routes::schemas::KServeGenerateResponse)))]
pub(super) async fn model_generate(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    answer(generate(state, principal, path.into_inner(), None, body, false).await)
}

/// The same for one version. Requires: invoker.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/generate", tag = "kserve", request_body = crate::routes::schemas::KServeGenerateRequest, responses((status = 200, body = crate::routes::schemas::KServeGenerateResponse)))]
pub(super) async fn version_generate(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (model, version) = path.into_inner();
    answer(generate(state, principal, model, Some(version), body, false).await)
}

/// Generates text from `text_input`, streamed as server-sent events. Requires: invoker.
#[utoipa::path(post, path = "/v2/models/{model}/generate_stream", tag = "kserve", request_body = crate::routes::schemas::KServeGenerateRequest, responses((status = 200, description = "Server-sent events, each `data:` a generate response", content_type = "text/event-stream", body = crate::routes::schemas::SseEvent)))]
pub(super) async fn model_generate_stream(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    answer(generate(state, principal, path.into_inner(), None, body, true).await)
}

/// The same for one version. Requires: invoker.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/generate_stream", tag = "kserve", request_body = crate::routes::schemas::KServeGenerateRequest, responses((status = 200, description = "Server-sent events, each `data:` a generate response", content_type = "text/event-stream", body = crate::routes::schemas::SseEvent)))]
pub(super) async fn version_generate_stream(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (model, version) = path.into_inner();
    answer(generate(state, principal, model, Some(version), body, true).await)
}
