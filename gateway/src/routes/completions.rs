//! OpenAI's text generation: `/v1/completions` and `/v1/chat/completions`, whole or streamed
//! as server-sent events (`data: {…}` chunks, then `data: [DONE]`). A client that goes away
//! mid-stream stops the generation on the runner. Every call is metered, and its generated
//! tokens count against the tokens-per-minute limits.

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use proto::v1::{ChatMessage, GenerateRequest};
use registry::names::Task;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::inference::{Call, Generated, Progress, SERVED_BY};

/// `/v1/completions` without `max_tokens` generates this many (OpenAI's default).
const DEFAULT_COMPLETION_TOKENS: u32 = 16;
/// `/v1/chat/completions` without a limit generates at most this many.
const DEFAULT_CHAT_TOKENS: u32 = 512;
const MAX_STOP_SEQUENCES: usize = 4;

#[derive(Deserialize, Default, utoipa::ToSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The sampling fields both endpoints share.
#[derive(Deserialize, utoipa::ToSchema)]
struct Sampling {
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// Not in OpenAI's API; vLLM and others take it.
    top_k: Option<u32>,
    seed: Option<u64>,
    /// Not in OpenAI's API; vLLM and others take it.
    repetition_penalty: Option<f32>,
    stop: Option<Value>,
    n: Option<u32>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "llama", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}))]
pub(super) struct CompletionRequest {
    model: String,
    prompt: Value,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "llama", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "seed": 7}))]
pub(super) struct ChatRequest {
    model: String,
    messages: Vec<ChatMessageIn>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ChatMessageIn {
    role: String,
    /// A string, or an array of `{"type": "text", "text": …}` parts.
    content: Value,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(message)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

impl Sampling {
    /// The runner's request, less the model and the input.
    fn request(&self, default_tokens: u32) -> Result<GenerateRequest, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("n must be 1"));
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens).unwrap_or(default_tokens);
        if max_tokens == 0 {
            return Err(invalid("max_tokens must be at least 1"));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(invalid("temperature must be between 0 and 2"));
        }
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(invalid("top_p must be above 0 and at most 1"));
        }
        if self.repetition_penalty.is_some_and(|p| p <= 0.0) {
            return Err(invalid("repetition_penalty must be above 0"));
        }
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| invalid("stop must be a string or an array of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("stop must be a string or an array of strings")),
        };
        if stop.len() > MAX_STOP_SEQUENCES || stop.iter().any(String::is_empty) {
            return Err(invalid(format!("stop takes at most {MAX_STOP_SEQUENCES} non-empty sequences")));
        }
        Ok(GenerateRequest {
            model: None,
            prompt: String::new(),
            messages: Vec::new(),
            max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            repetition_penalty: self.repetition_penalty,
            stop,
        })
    }
}

/// Text completion. Requires: invoker.
#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = CompletionRequest, responses((status = 200, description = "A completion, or server-sent events of chunks with `stream`", content((crate::routes::schemas::Completion = "application/json"), (crate::routes::schemas::SseEvent = "text/event-stream")))))]
pub(super) async fn completions(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<CompletionRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let call = Call::start(&state, &principal, &body.model)?;
    let prompt = match &body.prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_owned()
        }
        _ => return Err(invalid("prompt must be a string (or an array of one string)")),
    };
    if prompt.is_empty() {
        return Err(invalid("prompt must not be empty"));
    }
    let mut request = body.sampling.request(DEFAULT_COMPLETION_TOKENS)?;
    request.prompt = prompt;
    generate(call, &body.model, request, &body.sampling, Kind::Completion).await
}

/// Chat completion: the messages go through the model's chat template. Requires: invoker.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatRequest, responses((status = 200, description = "A chat completion, or server-sent events of chunks with `stream`", content((crate::routes::schemas::Completion = "application/json"), (crate::routes::schemas::SseEvent = "text/event-stream")))))]
pub(super) async fn chat_completions(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let call = Call::start(&state, &principal, &body.model)?;
    if body.messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer") {
            return Err(invalid(format!("messages[{i}].role must be system, user, assistant or developer")));
        }
        let content = match m.content {
            Value::String(s) => s,
            Value::Array(parts) => parts
                .iter()
                .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("text"), Some(text)) => Ok(text),
                    _ => Err(invalid(format!("messages[{i}].content parts must be text parts"))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(""),
            _ => return Err(invalid(format!("messages[{i}].content must be a string or text parts"))),
        };
        let role = if m.role == "developer" { "system".to_owned() } else { m.role };
        messages.push(ChatMessage { role, content });
    }
    let mut request = body.sampling.request(DEFAULT_CHAT_TOKENS)?;
    request.messages = messages;
    generate(call, &body.model, request, &body.sampling, Kind::Chat).await
}

fn usage(progress: &Progress) -> Value {
    json!({
        "prompt_tokens": progress.prompt_tokens,
        "completion_tokens": progress.completion_tokens,
        "total_tokens": progress.prompt_tokens + progress.completion_tokens,
    })
}

async fn generate(
    mut call: Call,
    requested: &str,
    request: GenerateRequest,
    sampling: &Sampling,
    kind: Kind,
) -> Result<HttpResponse, ApiError> {
    let target = call.resolve(requested, Some(Task::Generation)).await?;
    let served_by = target.served_by();
    let chunks = call.generate(target, request).await?;
    let id = format!("{}-{}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, uuid::Uuid::now_v7().simple());
    let created = registry::db::now_ms() / 1000;
    let model = requested.to_owned();

    if !sampling.stream {
        let progress = chunks.finish().await?;
        let finish = progress.finish_reason.clone().unwrap_or_else(|| "stop".into());
        let choice = match kind {
            Kind::Completion => json!({ "index": 0, "text": progress.text, "finish_reason": finish, "logprobs": null }),
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": progress.text },
                "finish_reason": finish,
                "logprobs": null,
            }),
        };
        let object = if kind == Kind::Chat { "chat.completion" } else { "text_completion" };
        return Ok(HttpResponse::Ok().insert_header((SERVED_BY, served_by)).json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": [choice], "usage": usage(&progress),
        })));
    }

    let include_usage = sampling.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let object = if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
    let event = move |choices: Value, usage: Option<Value>| {
        let mut body = json!({ "id": id, "object": object, "created": created, "model": model, "choices": choices });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        Bytes::from(format!("data: {body}\n\n"))
    };
    let piece = move |text: &str, finish: Option<&str>, first: bool| match kind {
        Kind::Completion => json!([{ "index": 0, "text": text, "finish_reason": finish, "logprobs": null }]),
        Kind::Chat => {
            let delta =
                if first { json!({ "role": "assistant", "content": text }) } else { json!({ "content": text }) };
            json!([{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }])
        }
    };
    // The state the stream carries: the chunks, with the call that meters them when the stream
    // ends or is dropped with a departed client.
    struct Sse {
        chunks: Generated,
        first: bool,
        done: bool,
    }
    let sse = Sse { chunks, first: true, done: false };
    let stream = futures::stream::unfold(sse, move |mut sse| {
        let event = event.clone();
        async move {
            if sse.done {
                return None;
            }
            let out = match sse.chunks.next().await {
                Some(Ok(chunk)) => {
                    let finish = (!chunk.finish_reason.is_empty()).then_some(chunk.finish_reason.as_str());
                    let mut out = Vec::new();
                    if !chunk.text.is_empty() || finish.is_some() || sse.first {
                        out.extend_from_slice(&event(piece(&chunk.text, finish, sse.first), None));
                        sse.first = false;
                    }
                    if finish.is_some() {
                        if include_usage {
                            out.extend_from_slice(&event(json!([]), Some(usage(sse.chunks.progress()))));
                        }
                        out.extend_from_slice(b"data: [DONE]\n\n");
                        sse.done = true;
                    }
                    out
                }
                Some(Err(error)) => {
                    sse.done = true;
                    error.log_if_ours();
                    let body = json!({ "error": { "code": error.code().as_str(), "message": error.message() } });
                    format!("data: {body}\n\n").into_bytes()
                }
                None => {
                    sse.done = true;
                    b"data: [DONE]\n\n".to_vec()
                }
            };
            Some((Ok::<_, actix_web::Error>(Bytes::from(out)), sse))
        }
    });
    Ok(HttpResponse::Ok()
        .insert_header((SERVED_BY, served_by))
        .insert_header(("Cache-Control", "no-cache"))
        .content_type("text/event-stream")
        .streaming(stream))
}
