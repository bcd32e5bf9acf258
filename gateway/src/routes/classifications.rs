//! Sequence classification, as JSON: `POST /v1/classifications` `{"model", "input"}` answers
//! every label's score for each input, best first. (OpenAI has no such endpoint; the shape
//! follows its embeddings API.)

use std::time::Instant;

use actix_web::{HttpResponse, post, web};
use registry::names::{Role, Task};
use serde::Deserialize;
use serde_json::{Value, json};

use super::openai::{SERVED_BY, Served, model_spec, parse_input};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "sentiment", "input": ["I loved it.", "Not worth the money."]}))]
#[serde(deny_unknown_fields)]
struct ClassifyRequest {
    model: String,
    /// A string or an array of strings.
    input: Value,
}

/// Requires: invoker. Every call is metered, failed ones too.
#[utoipa::path(tag = "openai", request_body = ClassifyRequest, responses((status = 200, body = crate::routes::schemas::Classifications)))]
#[post("/v1/classifications")]
async fn classifications(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<ClassifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant = principal.own_tenant(Role::Invoker)?;
    let started = Instant::now();
    let body = body.into_inner();
    let mut served = Served { model: body.model.clone(), version: 0, input_tokens: 0 };
    let answer = async {
        let texts = parse_input(body.input)?;
        let spec = model_spec(&state, tenant, &body.model, Task::Classification, &mut served).await?;
        let served_by = spec.display_name.clone();
        let results = state.runners.classify(spec, texts).await?.results;
        let tokens: u32 = results.iter().map(|r| r.tokens).sum();
        served.input_tokens = i64::from(tokens);
        let data: Vec<Value> = results
            .into_iter()
            .enumerate()
            .map(|(index, r)| {
                let mut scores: Vec<(String, f32)> = r.scores.into_iter().map(|s| (s.label, s.score)).collect();
                scores.sort_by(|a, b| b.1.total_cmp(&a.1));
                let best = scores.first().cloned().unwrap_or_default();
                let scores: Vec<Value> = scores.into_iter().map(|(label, score)| json!({ "label": label, "score": score })).collect();
                json!({ "object": "classification", "index": index, "label": best.0, "score": best.1, "scores": scores })
            })
            .collect();
        Ok::<_, ApiError>(HttpResponse::Ok().insert_header((SERVED_BY, served_by)).json(json!({
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        })))
    }
    .await;
    served.record(&state, &principal, answer.is_ok(), started);
    answer
}
