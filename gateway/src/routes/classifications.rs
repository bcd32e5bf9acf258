//! Sequence classification, as JSON: `POST /v1/classifications` `{"model", "input"}` answers
//! every label's score for each input, best first. (OpenAI has no such endpoint; the shape
//! follows its embeddings API.)

use actix_web::{HttpResponse, web};
use registry::names::Task;
use serde::Deserialize;
use serde_json::{Value, json};

use super::input::{list_answer, texts};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::inference::Call;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "sentiment", "input": ["I loved it.", "Not worth the money."]}))]
#[serde(deny_unknown_fields)]
pub(super) struct ClassifyRequest {
    model: String,
    /// A string or an array of strings.
    input: Value,
}

/// Requires: invoker. Every call is metered, failed ones too.
#[utoipa::path(post, path = "/v1/classifications", tag = "openai", request_body = ClassifyRequest, responses((status = 200, body = crate::routes::schemas::Classifications)))]
pub(super) async fn classifications(
    state: web::Data<AppState>,
    principal: Principal,
    body: web::Json<ClassifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut call = Call::start(&state, &principal, &body.model)?;
    let texts = texts(body.input)?;
    let target = call.resolve(&body.model, Some(Task::Classification)).await?;
    let served_by = target.served_by();
    let results = call.classify(target, texts).await?.results;
    let tokens: u32 = results.iter().map(|r| r.tokens).sum();
    let data: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            let mut scores: Vec<(String, f32)> = r.scores.into_iter().map(|s| (s.label, s.score)).collect();
            scores.sort_by(|a, b| b.1.total_cmp(&a.1));
            let best = scores.first().cloned().unwrap_or_default();
            let scores: Vec<Value> =
                scores.into_iter().map(|(label, score)| json!({ "label": label, "score": score })).collect();
            json!({ "object": "classification", "index": index, "label": best.0, "score": best.1, "scores": scores })
        })
        .collect();
    call.succeeded();
    Ok(list_answer(served_by, &body.model, data, u64::from(tokens)))
}
