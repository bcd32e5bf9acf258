//! The OpenAI-compatible inference API. The tenant comes from the credential; `model` is
//! `name` (newest ready version), `name:alias` or `name@version` inside that tenant.

use actix_web::{HttpResponse, get, post, web};
use base64::Engine as _;
use proto::v1::{ModelFile, ModelSpec};
use registry::models::ModelFilter;
use registry::names::{ModelRef, Role, Task};
use registry::page::PageRequest;
use registry::tenants::Tenant;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::usage::Metered;

/// Names the version that answered (`acme/minilm@3`), so canary splits can be observed.
pub(super) const SERVED_BY: &str = "x-modelgate-version";

/// Inputs in one embeddings request at most (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// The caller's callable models: each model with a ready version, and each of its aliases.
/// Requires: invoker.
#[utoipa::path(tag = "openai", responses((status = 200, body = crate::routes::schemas::ModelList)))]
#[get("/v1/models")]
async fn models(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let tenant = principal.own_tenant(Role::Invoker)?;
    let mut data = Vec::new();
    let mut models = Vec::new();
    let mut page = PageRequest::first(registry::page::MAX_LIMIT);
    loop {
        let batch = state.registry.list_models(&tenant.id, &ModelFilter::default(), &page).await?;
        models.extend(batch.data);
        match batch.next_cursor {
            Some(_) => page.after = models.last().map(|m| m.name.to_string()),
            None => break,
        }
    }
    for model in models {
        let latest = state.registry.resolve(&tenant.id, &ModelRef::Latest(model.name.clone())).await;
        if latest.is_err() {
            continue;
        }
        let entry = |id: String| json!({ "id": id, "object": "model", "created": model.created_at / 1000, "owned_by": tenant.name });
        data.push(entry(model.name.to_string()));
        for alias in state.registry.aliases(&model).await? {
            data.push(entry(format!("{}:{}", model.name, alias.name)));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "minilm", "input": ["A man is eating food.", "A man is riding a horse."]}))]
struct EmbeddingsRequest {
    /// `model`, `model:alias` or `model@version`.
    model: String,
    /// A string, or an array of 1 to 2048 strings.
    input: Value,
    /// `float`, or `base64` (little-endian f32).
    #[serde(default)]
    encoding_format: EncodingFormat,
    /// Keep the first this many values, scaled back to unit length.
    #[serde(default)]
    dimensions: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_input", message)
}

/// `input` as OpenAI takes it: a string or an array of strings.
pub(super) fn parse_input(input: Value) -> Result<Vec<String>, ApiError> {
    let texts = match input {
        Value::String(s) => vec![s],
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid_input("input must not be an empty array"));
            }
            if items.iter().all(Value::is_number) || items.iter().all(Value::is_array) {
                return Err(invalid_input("token arrays are not supported; send input as text"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(invalid_input(format!("input[{i}] must be a string"))),
                })
                .collect::<Result<_, _>>()?
        }
        _ => {
            return Err(invalid_input("input must be a string or an array of strings"));
        }
    };
    if texts.len() > MAX_INPUTS {
        return Err(invalid_input(format!("at most {MAX_INPUTS} inputs per request; got {}", texts.len())));
    }
    Ok(texts)
}

/// Requires: invoker. Every call is metered, failed ones too.
#[utoipa::path(tag = "openai", request_body = EmbeddingsRequest, responses((status = 200, body = crate::routes::schemas::Embeddings)))]
#[post("/v1/embeddings")]
async fn embeddings(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<EmbeddingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.own_tenant(Role::Invoker)?;
    let started = std::time::Instant::now();
    let mut served = Served { model: body.model.clone(), version: 0, input_tokens: 0 };
    let answer = embed(&state, tenant, body.into_inner(), &mut served).await;
    served.record(&state, &principal, answer.is_ok(), started);
    answer
}

/// What a request turned out to use, for metering.
pub(super) struct Served {
    pub model: String,
    pub version: i64,
    pub input_tokens: i64,
}

impl Served {
    /// Meters a request that generated nothing (embeddings, classifications).
    pub(super) fn record(&self, state: &AppState, principal: &Principal, ok: bool, started: std::time::Instant) {
        let Ok(tenant) = principal.own_tenant(Role::Invoker) else { return };
        state.usage.record(Metered {
            tenant_id: &tenant.id,
            tenant: tenant.name.as_str(),
            key_id: &principal.key_id,
            model: &self.model,
            version: self.version,
            ok,
            input_tokens: self.input_tokens,
            output_tokens: 0,
            latency: started.elapsed(),
        });
    }
}

/// The version `requested` names in the caller's tenant, as a runner needs it (files with
/// digests and object paths); 404 `model_not_found` when there is none, 400 when the model
/// does another task. Notes the model and version in `served`.
pub(super) async fn model_spec(
    state: &AppState,
    tenant: &Tenant,
    requested: &str,
    task: Task,
    served: &mut Served,
) -> Result<ModelSpec, ApiError> {
    let (spec, actual) = resolve_spec(state, tenant, requested, served).await?;
    if actual != task {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "model {requested:?} is a {} model; this endpoint serves {} models",
                actual.as_str(),
                task.as_str()
            ),
        ));
    }
    Ok(spec)
}

/// The same for a model of any task; answers its task too.
pub(super) async fn resolve_spec(
    state: &AppState,
    tenant: &Tenant,
    requested: &str,
    served: &mut Served,
) -> Result<(ModelSpec, Task), ApiError> {
    let not_found = || {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "model_not_found",
            // A made-up name may be of any length; the answer names at most its start.
            match registry::usage::bounded(requested, registry::usage::MAX_MODEL_LEN) {
                shown if shown.len() < requested.len() => {
                    format!("model {shown:?}… ({} bytes) does not exist", requested.len())
                }
                _ => format!("model {requested:?} does not exist"),
            },
        )
    };
    let reference = ModelRef::parse(requested).map_err(|_| not_found())?;
    let (model, version) =
        state.resolver.resolve(&state.registry, &tenant.id, &reference, requested).await.map_err(|e| match e {
            registry::Error::NotFound { .. } => not_found(),
            e => e.into(),
        })?;
    served.model = model.name.to_string();
    served.version = version.number;
    let storage = state.registry.storage();
    let spec = ModelSpec {
        version_id: version.id.clone(),
        display_name: format!("{}/{}@{}", tenant.name, model.name, version.number),
        architecture: version.architecture.clone().unwrap_or_default(),
        task: model.task.as_str().to_owned(),
        files: version
            .files
            .iter()
            .map(|f| ModelFile {
                path: f.path.to_string(),
                sha256: f.digest.to_string(),
                size: f.size,
                object_path: storage.blob_path(&tenant.id, &f.digest).to_string(),
            })
            .collect(),
        tenant_id: tenant.id.clone(),
    };
    Ok((spec, model.task))
}

async fn embed(
    state: &AppState,
    tenant: &Tenant,
    body: EmbeddingsRequest,
    served: &mut Served,
) -> Result<HttpResponse, ApiError> {
    let texts = parse_input(body.input)?;
    if body.dimensions == Some(0) {
        return Err(ApiError::bad_request("invalid_request", "dimensions must be at least 1"));
    }
    let spec = model_spec(state, tenant, &body.model, Task::Embedding, served).await?;
    let display_name = spec.display_name.clone();
    let answer = state.runners.embed(spec, texts).await?;
    let prompt_tokens: u64 = answer.embeddings.iter().map(|e| u64::from(e.tokens)).sum();
    served.input_tokens = i64::try_from(prompt_tokens).unwrap_or(i64::MAX);
    let width = answer.embeddings.first().map_or(0, |e| e.values.len());
    if let Some(dimensions) = body.dimensions.filter(|d| *d as usize > width) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("dimensions is {dimensions}; this model's embeddings have {width}"),
        ));
    }
    let data: Vec<Value> = answer
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let values = match body.dimensions {
                Some(d) => shorten(e.values, d as usize),
                None => e.values,
            };
            let embedding = match body.encoding_format {
                EncodingFormat::Float => json!(values),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Ok(HttpResponse::Ok().insert_header((SERVED_BY, display_name)).json(json!({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })))
}

/// The first `dimensions` values, scaled back to unit length (as OpenAI shortens its
/// embeddings).
fn shorten(mut values: Vec<f32>, dimensions: usize) -> Vec<f32> {
    values.truncate(dimensions);
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        values.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortened_embeddings_keep_their_direction_at_unit_length() {
        let short = shorten(vec![3.0, 4.0, 12.0], 2);
        assert_eq!(short, vec![0.6, 0.8]);
    }

    #[test]
    fn input_takes_strings_and_refuses_the_rest_clearly() {
        assert_eq!(parse_input(json!("hi")).ok(), Some(vec!["hi".to_owned()]));
        assert_eq!(parse_input(json!(["a", "b"])).ok(), Some(vec!["a".to_owned(), "b".to_owned()]));
        let message = |v: Value| parse_input(v).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(json!([])).contains("empty array"));
        assert!(message(json!(42)).contains("string or an array"));
        assert!(message(json!([1, 2])).contains("token arrays"));
        assert!(message(json!(["a", {}])).contains("input[1]"));
        // An empty string is a sentence like any other (sentence-transformers embeds it too).
        assert_eq!(parse_input(json!(["a", ""])).ok(), Some(vec!["a".to_owned(), String::new()]));
        assert!(message(json!(vec!["x"; MAX_INPUTS + 1])).contains("at most"));
    }
}
