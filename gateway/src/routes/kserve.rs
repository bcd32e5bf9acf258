//! KServe's Open Inference Protocol (v2) over REST, for the caller's own tenant: health,
//! server and model metadata, readiness, and `infer` for embedding and classification models
//! (BYTES text inputs; FP32 outputs, and BYTES labels for classifiers); the generate
//! extension is in `kserve_generate.rs`. Errors answer
//! `{"error": "…"}`, the protocol's shape. `{model}` is a model name; `versions/{v}` a number.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use registry::names::{ModelName, ModelRef, Role, Task};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::inference::Call;

/// The protocol's error shape, `{"error": "message"}`, with the error's status and headers
/// (`Retry-After` on 429 and 503); a server-side failure is logged, as for any other answer.
pub(crate) fn kserve_error(e: &ApiError) -> HttpResponse {
    e.respond(&error_body(e))
}

/// An error that ends a generate stream, as its last event: logged here, once, when it is ours.
pub(super) fn stream_error(e: &ApiError) -> Value {
    e.log_if_ours();
    error_body(e)
}

fn error_body(e: &ApiError) -> Value {
    json!({ "error": e.message() })
}

pub(super) fn answer(result: Result<HttpResponse, ApiError>) -> HttpResponse {
    result.unwrap_or_else(|e| kserve_error(&e))
}

/// Requires: nothing.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeLive)))]
pub(super) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "live": true }))
}

/// Ready when the metadata database answers. Requires: nothing.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeReady), (status = 503, body = crate::routes::schemas::KServeReady)))]
pub(super) async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.registry.db().ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "ready": true })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({ "ready": false })),
    }
}

/// Server metadata. Requires: nothing.
#[utoipa::path(get, path = "/v2", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeServer)))]
pub(super) async fn server() -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({ "name": "modelgate", "version": env!("CARGO_PKG_VERSION"), "extensions": ["generate"] }))
}

/// `model` or `model@version`, as the registry resolves references.
pub(super) fn reference(model: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{model}@{v}"),
        None => model.to_owned(),
    }
}

fn tensors(task: Task) -> (Value, Value) {
    let text = json!([{ "name": "text", "datatype": "BYTES", "shape": [-1] }]);
    match task {
        Task::Embedding => (text, json!([{ "name": "embedding", "datatype": "FP32", "shape": [-1, -1] }])),
        Task::Classification => (
            text,
            json!([
                { "name": "scores", "datatype": "FP32", "shape": [-1, -1] },
                { "name": "label", "datatype": "BYTES", "shape": [-1] }
            ]),
        ),
        Task::Generation => (text, json!([{ "name": "text_output", "datatype": "BYTES", "shape": [-1] }])),
    }
}

async fn metadata(
    state: &AppState,
    principal: &Principal,
    model: &str,
    version: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.own_tenant(Role::Invoker)?;
    let not_found = || ApiError::not_found(format!("model {model:?} not found"));
    let name = ModelName::parse(model).map_err(|_| not_found())?;
    let reference = ModelRef::parse(&reference(model, version)).map_err(|_| not_found())?;
    let (found, resolved) = state.registry.resolve(&tenant.id, &reference).await.map_err(|e| match e {
        registry::Error::NotFound { .. } => not_found(),
        e => e.into(),
    })?;
    let (inputs, outputs) = tensors(found.task);
    Ok(HttpResponse::Ok().json(json!({
        "name": name.as_str(),
        "versions": [resolved.number.to_string()],
        "platform": "modelgate",
        "inputs": inputs,
        "outputs": outputs,
    })))
}

/// Model metadata (the newest ready version). Requires: invoker.
#[utoipa::path(get, path = "/v2/models/{model}", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeMetadata)))]
pub(super) async fn model_metadata(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> HttpResponse {
    answer(metadata(&state, &principal, &path, None).await)
}

/// Model metadata of one version. Requires: invoker.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeMetadata)))]
pub(super) async fn version_metadata(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (model, version) = path.into_inner();
    answer(metadata(&state, &principal, &model, Some(&version)).await)
}

async fn readiness(state: &AppState, principal: &Principal, model: &str, version: Option<&str>) -> HttpResponse {
    let checked = async {
        metadata(state, principal, model, version).await?;
        // A quarantined version is not ready: it answers version_quarantined, as its calls do.
        let tenant = principal.own_tenant(Role::Invoker)?;
        let requested = reference(model, version);
        if let Ok(reference) = ModelRef::parse(&requested)
            && let Err(e @ registry::Error::Quarantined(_)) =
                state.resolver.resolve(&state.registry, &tenant.id, &reference, &requested).await
        {
            return Err(ApiError::from(e));
        }
        Ok(())
    };
    match checked.await {
        Ok(()) => HttpResponse::Ok().json(json!({ "name": model, "ready": true })),
        Err(e) => kserve_error(&e),
    }
}

/// Ready when a ready version answers to the name. Requires: invoker.
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeModelReady)))]
pub(super) async fn model_ready(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> HttpResponse {
    readiness(&state, &principal, &path, None).await
}

/// Requires: invoker.
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "kserve", responses((status = 200, body = crate::routes::schemas::KServeModelReady)))]
pub(super) async fn version_ready(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (model, version) = path.into_inner();
    readiness(&state, &principal, &model, Some(&version)).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["A man is eating food.", "A man is riding a horse."]}]}))]
struct InferRequest {
    id: Option<String>,
    inputs: Vec<InferInput>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(message)
}

/// The texts of the one BYTES input, its shape checked against its data.
fn texts(request: &InferRequest) -> Result<Vec<String>, ApiError> {
    let [input] = request.inputs.as_slice() else {
        return Err(invalid("send exactly one input: the texts, as BYTES"));
    };
    if input.datatype != "BYTES" {
        return Err(invalid(format!("input {:?} must be BYTES, not {}", input.name, input.datatype)));
    }
    let data = input.data.as_array().ok_or_else(|| invalid(format!("input {:?} data must be an array", input.name)))?;
    let texts: Vec<String> = data
        .iter()
        .map(|v| {
            v.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("input {:?} holds a non-string", input.name)))
        })
        .collect::<Result<_, _>>()?;
    // Checked: a shape like [2^62, 4] must not overflow (it panicked in debug builds).
    let elements = input.shape.iter().try_fold(1i64, |n, d| if *d < 0 { None } else { n.checked_mul(*d) });
    if elements != Some(texts.len() as i64) || texts.is_empty() {
        return Err(invalid(format!(
            "input {:?} has shape {:?} but {} elements",
            input.name,
            input.shape,
            texts.len()
        )));
    }
    Ok(texts)
}

async fn infer(
    state: &web::Data<AppState>,
    principal: &Principal,
    model: &str,
    version: Option<&str>,
    request: &InferRequest,
) -> Result<HttpResponse, ApiError> {
    let mut call = Call::start(state, principal, model)?;
    let texts = texts(request)?;
    let n = texts.len();
    let target = call.resolve(&reference(model, version), None).await.map_err(|e| {
        if e.status() == StatusCode::NOT_FOUND { ApiError::not_found(format!("model {model:?} not found")) } else { e }
    })?;
    let outputs = match target.task {
        Task::Embedding => {
            let answer = call.embed(target, texts).await?;
            let width = answer.embeddings.first().map_or(0, |e| e.values.len());
            let data: Vec<f32> = answer.embeddings.into_iter().flat_map(|e| e.values).collect();
            json!([{ "name": "embedding", "datatype": "FP32", "shape": [n, width], "data": data }])
        }
        Task::Classification => {
            let results = call.classify(target, texts).await?.results;
            let width = results.first().map_or(0, |r| r.scores.len());
            let labels: Vec<String> = results
                .iter()
                .map(|r| {
                    r.scores
                        .iter()
                        .max_by(|a, b| a.score.total_cmp(&b.score))
                        .map(|s| s.label.clone())
                        .unwrap_or_default()
                })
                .collect();
            let scores: Vec<f32> = results.iter().flat_map(|r| r.scores.iter().map(|s| s.score)).collect();
            json!([
                { "name": "scores", "datatype": "FP32", "shape": [n, width], "data": scores },
                { "name": "label", "datatype": "BYTES", "shape": [n], "data": labels }
            ])
        }
        Task::Generation => {
            return Err(ApiError::invalid(
                "generation models answer /v1/completions, /v1/chat/completions and /v2/models/{model}/generate",
            ));
        }
    };
    let mut body = json!({ "model_name": model, "model_version": call.version().to_string(), "outputs": outputs });
    if let Some(id) = &request.id {
        body["id"] = json!(id);
    }
    call.succeeded();
    Ok(HttpResponse::Ok().json(body))
}

/// Inference with the newest ready version. Requires: invoker.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "kserve", request_body = InferRequest, responses((status = 200, body = crate::routes::schemas::KServeInferResponse)))]
pub(super) async fn model_infer(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    answer(async { infer(&state, &principal, &path, None, &parse(&body)?).await }.await)
}

/// Inference with one version. Requires: invoker.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "kserve", request_body = InferRequest, responses((status = 200, body = crate::routes::schemas::KServeInferResponse)))]
pub(super) async fn version_infer(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (model, version) = path.into_inner();
    answer(async { infer(&state, &principal, &model, Some(&version), &parse(&body)?).await }.await)
}

/// The texts of an infer request's body, as the infer routes decode it (public for the fuzz
/// targets: no body may panic it).
pub fn decode_infer(body: &[u8]) -> Result<Vec<String>, ApiError> {
    texts(&parse(body)?)
}

/// The request's JSON, whatever its Content-Type says (Triton's clients send none).
fn parse(body: &[u8]) -> Result<InferRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("the JSON body is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[actix_web::test]
    async fn kserve_errors_keep_the_status_and_headers_of_the_error() {
        let refused = ApiError::new(ErrorCode::Overloaded, "the model's queue is full").retry_after(1);
        let response = kserve_error(&refused);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after = response.headers().get(actix_web::http::header::RETRY_AFTER);
        assert_eq!(retry_after.and_then(|v| v.to_str().ok()), Some("1"));
        let body = actix_web::body::to_bytes(response.into_body()).await.expect("body");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body, json!({ "error": "the model's queue is full" }));
    }

    #[test]
    fn infer_bodies_decode_or_are_refused_with_400() {
        let one = br#"{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["hi"]}]}"#;
        assert_eq!(decode_infer(one).expect("a good body"), ["hi"]);
        for bad in [
            &br#"{"inputs":[]}"#[..],
            br#"{"inputs":[{"name":"t","shape":[2],"datatype":"BYTES","data":["hi"]}]}"#,
            br#"{"inputs":[{"name":"t","shape":[-1,-1],"datatype":"BYTES","data":["hi"]}]}"#,
            // The shape's product overflows i64 (it panicked in debug builds).
            br#"{"inputs":[{"name":"t","shape":[9223372036854775807,2],"datatype":"BYTES","data":["hi"]}]}"#,
            br#"{"inputs":[{"name":"t","shape":[4294967296,4294967296],"datatype":"BYTES","data":["hi"]}]}"#,
            b"not json",
        ] {
            let e = decode_infer(bad).expect_err("refused");
            assert_eq!(e.status().as_u16(), 400, "{}", String::from_utf8_lossy(bad));
        }
    }
}
