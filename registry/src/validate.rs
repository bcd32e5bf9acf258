//! Commit-time validation of a version's files. Every problem is collected, so the
//! uploader learns all of them at once, each tied to the file it concerns.

use std::collections::BTreeMap;

use formats::safetensors::TensorInfo;
use serde_json::Value;

use crate::error::Problem;
use crate::names::{Digest, Task};
use crate::storage::Storage;
use crate::versions::VersionFile;
use crate::{Error, Result};

const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
const MAX_TOKENIZER_BYTES: u64 = 64 * 1024 * 1024;

use formats::families::{self, LSTM};

/// Checks a version's files and returns the architecture it runs as, or every problem found.
/// `max_model_bytes`, when known, is the largest memory budget of a runner: a version that
/// would take more is refused. Storage failures are returned as errors, not as problems of
/// the version.
pub async fn validate(
    storage: &Storage,
    tenant_id: &str,
    task: Task,
    files: &[VersionFile],
    max_model_bytes: Option<u64>,
) -> Result<Result<String, Vec<Problem>>> {
    let mut problems = Vec::new();
    let find = |name: &str| files.iter().find(|f| f.path.as_str() == name);

    let mut config = None;
    match find("config.json") {
        None => problems.push(Problem::version("config.json is missing")),
        Some(f) if f.size > MAX_CONFIG_BYTES => {
            problems
                .push(Problem::file("config.json", format!("is {} bytes; at most {MAX_CONFIG_BYTES} allowed", f.size)));
        }
        Some(f) => {
            let bytes = storage.read_blob_range(tenant_id, &f.digest, 0..f.size).await?;
            match check_config(task, &bytes) {
                Ok(arch) => config = Some((arch, bytes)),
                Err(message) => problems.push(Problem::file("config.json", message)),
            }
        }
    }

    if config.as_ref().is_some_and(|(arch, _)| arch == LSTM) {
        match find("vocab.json") {
            None => problems.push(Problem::version("vocab.json is missing; the LSTM classifier maps words by it")),
            Some(f) if f.size > MAX_TOKENIZER_BYTES => problems.push(Problem::file(
                "vocab.json",
                format!("is {} bytes; at most {MAX_TOKENIZER_BYTES} allowed", f.size),
            )),
            Some(f) => {
                let bytes = storage.read_blob_range(tenant_id, &f.digest, 0..f.size).await?;
                let ok = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.as_object().map(|o| o.values().all(Value::is_u64)))
                    .unwrap_or(false);
                if !ok {
                    problems.push(Problem::file("vocab.json", "must be a JSON object of words to integer ids"));
                }
            }
        }
    } else if task.is_text() {
        match find("tokenizer.json") {
            None => problems
                .push(Problem::version(format!("tokenizer.json is missing; {} models take text", task.as_str()))),
            Some(f) if f.size > MAX_TOKENIZER_BYTES => problems.push(Problem::file(
                "tokenizer.json",
                format!("is {} bytes; at most {MAX_TOKENIZER_BYTES} allowed", f.size),
            )),
            Some(f) => {
                let bytes = storage.read_blob_range(tenant_id, &f.digest, 0..f.size).await?;
                if let Err(found) = formats::tokenizer::check(&bytes) {
                    problems.extend(found.into_iter().map(|m| Problem::file("tokenizer.json", m)));
                }
            }
        }
    }

    let weights: Vec<&VersionFile> = files.iter().filter(|f| f.path.as_str().ends_with(".safetensors")).collect();
    let gguf: Vec<&VersionFile> = files.iter().filter(|f| f.path.as_str().ends_with(".gguf")).collect();
    match (weights.is_empty(), gguf.len()) {
        (true, 0) => problems.push(Problem::version("no weights: neither *.safetensors nor a *.gguf file")),
        (false, 0) | (true, 1) => {}
        _ => {
            problems.push(Problem::version("weights come as *.safetensors or as one *.gguf file, not both or several"))
        }
    }
    if !gguf.is_empty() && task != Task::Generation {
        problems.push(Problem::version(format!("GGUF weights serve generation models, not {} ones", task.as_str())));
    }
    let mut headers = formats::Weights::default();
    for f in gguf {
        match read_gguf(storage, tenant_id, &f.digest, f.size).await? {
            Ok(header) => headers.gguf = Some((header, f.size)),
            Err(message) => problems.push(Problem::file(f.path.as_str(), message)),
        }
    }
    for f in weights {
        match read_safetensors(storage, tenant_id, &f.digest, f.size).await? {
            // The runner loads the version's top-level weight files.
            Ok(tensors) if !f.path.as_str().contains('/') => headers.tensors.extend(tensors),
            Ok(_) => {}
            Err(message) => problems.push(Problem::file(f.path.as_str(), message)),
        }
    }

    let Some((architecture, config)) = config else { return Ok(Err(problems)) };
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    match formats::admit(task.as_str(), &config, &headers) {
        Err(found) => Ok(Err(found.into_iter().map(|m| Problem::file("config.json", m)).collect())),
        Ok(plan) => {
            // The least a runner can take it in: half-precision weights and a context of 4,096
            // positions (or its own, if shorter).
            let needed = plan.bytes(2, plan.served_context(4096));
            Ok(match max_model_bytes {
                Some(max) if needed > max => Err(vec![Problem::version(format!(
                    "the model needs at least {} MiB; the largest runner's memory budget is {} MiB",
                    needed.div_ceil(1 << 20),
                    max >> 20
                ))]),
                _ => Ok(architecture),
            })
        }
    }
}

/// The architectures (config.json `model_type`) the runner serves for `task`.
pub fn supported(task: Task) -> Vec<&'static str> {
    families::architectures(task.as_str())
}

/// The architecture a config.json names, if it is one `task` supports with the fields its
/// family needs; else what is wrong, for the caller.
pub fn check_config(task: Task, bytes: &[u8]) -> Result<String, String> {
    let config: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON: {e}"))?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or("has no \"model_type\"; cannot tell the architecture")?;
    if !families::serves(task.as_str(), model_type) {
        let supported = supported(task);
        return Err(format!(
            "architecture {model_type:?} is not supported for task {}; supported: {}",
            task.as_str(),
            supported.join(", ")
        ));
    }
    let required: &[&str] = if model_type == LSTM {
        &["vocab_size", "embedding_dim", "hidden_dim", "max_length"]
    } else {
        &[
            "hidden_size",
            "num_attention_heads",
            "num_hidden_layers",
            "intermediate_size",
            "vocab_size",
            "max_position_embeddings",
        ]
    };
    let missing: Vec<&str> =
        required.iter().copied().filter(|k| config.get(*k).and_then(Value::as_u64).is_none_or(|n| n == 0)).collect();
    if !missing.is_empty() {
        return Err(format!("lacks positive integer field(s): {}", missing.join(", ")));
    }
    Ok(model_type.to_owned())
}

/// Reads a GGUF file's header: its first 8 MiB, or more when the header runs past them.
async fn read_gguf(
    storage: &Storage,
    tenant_id: &str,
    digest: &Digest,
    size: u64,
) -> Result<Result<formats::gguf::Header, String>> {
    let mut parsed = Err(formats::gguf::Error::Truncated);
    for wanted in formats::gguf::reads(size) {
        let head = storage.read_blob_range(tenant_id, digest, 0..wanted).await?;
        parsed = formats::gguf::parse(&head, size);
        if !matches!(parsed, Err(formats::gguf::Error::Truncated)) {
            break;
        }
    }
    Ok(parsed.map_err(|e| e.to_string()))
}

/// Reads only the header: length prefix, then the JSON table of tensors.
async fn read_safetensors(
    storage: &Storage,
    tenant_id: &str,
    digest: &Digest,
    size: u64,
) -> Result<Result<BTreeMap<String, TensorInfo>, String>> {
    if size < 8 {
        return Ok(Err(format!("is {size} bytes, shorter than the 8-byte header length")));
    }
    let prefix = storage.read_blob_range(tenant_id, digest, 0..8).await?;
    let prefix: [u8; 8] = prefix.as_ref().try_into().map_err(|_| Error::Invalid("short read".into()))?;
    let header_len = match formats::safetensors::header_length(prefix, size) {
        Ok(n) => n,
        Err(problem) => return Ok(Err(problem)),
    };
    let header = storage.read_blob_range(tenant_id, digest, 8..8 + header_len).await?;
    Ok(formats::safetensors::parse_header(&header, size - 8 - header_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_must_name_a_supported_architecture_and_sizes() {
        let good = br#"{"model_type":"bert","hidden_size":8,"num_attention_heads":2,"num_hidden_layers":1,"intermediate_size":16,"vocab_size":30,"max_position_embeddings":64}"#;
        assert_eq!(check_config(Task::Embedding, good), Ok("bert".to_owned()));
        let llama = br#"{"model_type":"llama"}"#;
        assert!(check_config(Task::Embedding, llama).is_err_and(|m| m.contains("\"llama\" is not supported")));
        assert!(check_config(Task::Embedding, b"{").is_err_and(|m| m.contains("not valid JSON")));
        let partial = br#"{"model_type":"bert","hidden_size":8}"#;
        assert!(check_config(Task::Embedding, partial).is_err_and(|m| m.contains("num_attention_heads")));
    }
}
