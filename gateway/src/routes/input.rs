//! What the OpenAI-shaped inference routes (embeddings, classifications) share: their `input`
//! (a string, or an array of strings) and their answer (a list with usage).

use actix_web::HttpResponse;
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorCode};
use crate::inference::SERVED_BY;

/// Inputs in one request at most (OpenAI's limit for embeddings).
const MAX_INPUTS: usize = 2048;

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, message)
}

/// `input` as OpenAI takes it: a string or an array of strings.
pub(super) fn texts(input: Value) -> Result<Vec<String>, ApiError> {
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

/// The answer: `data` for `model`, which `served_by` (`tenant/model@version`) computed from
/// `tokens` input tokens.
pub(super) fn list_answer(served_by: String, model: &str, data: Vec<Value>, tokens: u64) -> HttpResponse {
    HttpResponse::Ok().insert_header((SERVED_BY, served_by)).json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_takes_strings_and_refuses_the_rest_clearly() {
        assert_eq!(texts(json!("hi")).ok(), Some(vec!["hi".to_owned()]));
        assert_eq!(texts(json!(["a", "b"])).ok(), Some(vec!["a".to_owned(), "b".to_owned()]));
        let message = |v: Value| texts(v).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(json!([])).contains("empty array"));
        assert!(message(json!(42)).contains("string or an array"));
        assert!(message(json!([1, 2])).contains("token arrays"));
        assert!(message(json!(["a", {}])).contains("input[1]"));
        // An empty string is a sentence like any other (sentence-transformers embeds it too).
        assert_eq!(texts(json!(["a", ""])).ok(), Some(vec!["a".to_owned(), String::new()]));
        assert!(message(json!(vec!["x"; MAX_INPUTS + 1])).contains("at most"));
    }
}
