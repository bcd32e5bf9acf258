//! The OpenAI-compatible inference API. The tenant comes from the credential; `model` is
//! `name` (newest ready version), `name:alias` or `name@version` inside that tenant.

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use registry::names::{Role, Task};
use serde::Deserialize;
use serde_json::{Value, json};

use super::input::{list_answer, texts};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::inference::Call;

/// The caller's callable models: each model with a ready version, and each of its aliases.
/// Requires: invoker.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, body = crate::routes::schemas::ModelList)))]
pub(super) async fn models(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let tenant = principal.own_tenant(Role::Invoker)?;
    let mut data = Vec::new();
    for model in state.registry.callable_models(&tenant.id).await? {
        let entry = |id: String| json!({ "id": id, "object": "model", "created": model.created_at / 1000, "owned_by": tenant.name });
        data.push(entry(model.name.to_string()));
        data.extend(model.aliases.iter().map(|alias| entry(format!("{}:{alias}", model.name))));
    }
    Ok(HttpResponse::Ok().json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "minilm", "input": ["A man is eating food.", "A man is riding a horse."]}))]
pub(super) struct EmbeddingsRequest {
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

/// Requires: invoker. Every call is metered, failed ones too.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest, responses((status = 200, body = crate::routes::schemas::Embeddings)))]
pub(super) async fn embeddings(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<EmbeddingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut call = Call::start(&state, &principal, &body.model)?;
    let texts = texts(body.input)?;
    if body.dimensions == Some(0) {
        return Err(ApiError::invalid("dimensions must be at least 1"));
    }
    let target = call.resolve(&body.model, Some(Task::Embedding)).await?;
    let served_by = target.served_by();
    let answer = call.embed(target, texts).await?;
    let prompt_tokens: u64 = answer.embeddings.iter().map(|e| u64::from(e.tokens)).sum();
    let width = answer.embeddings.first().map_or(0, |e| e.values.len());
    if let Some(dimensions) = body.dimensions.filter(|d| *d as usize > width) {
        return Err(ApiError::invalid(format!("dimensions is {dimensions}; this model's embeddings have {width}")));
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
    call.succeeded();
    Ok(list_answer(served_by, &body.model, data, prompt_tokens))
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
}
