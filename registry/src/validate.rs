//! Commit-time validation of a version's files. Every problem is collected, so the
//! uploader learns all of them at once, each tied to the file it concerns.

use serde_json::Value;

use crate::error::Problem;
use crate::names::{Digest, Task};
use crate::storage::Storage;
use crate::versions::VersionFile;
use crate::{Error, Result};

/// Bound on a safetensors header (the format's own reference bound).
const MAX_SAFETENSORS_HEADER: u64 = 100 * 1024 * 1024;
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
const MAX_TOKENIZER_BYTES: u64 = 64 * 1024 * 1024;

/// Architectures a runner family serves, by task, keyed by the config's `model_type`.
const SUPPORTED: &[(Task, &str)] = &[
    (Task::Embedding, "bert"),
    (Task::Generation, "llama"),
    (Task::Generation, "qwen2"),
    (Task::Classification, "bert"),
    (Task::Classification, LSTM),
];

/// The LSTM classifier's own format (see runner/src/models/lstm_classifier.rs): its words
/// come from `vocab.json`, not a tokenizers file.
const LSTM: &str = "lstm_classifier";

/// Checks a version's files and returns the architecture it runs as, or every problem found.
/// Storage failures are returned as errors, not as problems of the version.
pub async fn validate(
    storage: &Storage,
    tenant_id: &str,
    task: Task,
    files: &[VersionFile],
) -> Result<Result<String, Vec<Problem>>> {
    let mut problems = Vec::new();
    let find = |name: &str| files.iter().find(|f| f.path.as_str() == name);

    let mut architecture = None;
    match find("config.json") {
        None => problems.push(Problem::version("config.json is missing")),
        Some(f) if f.size > MAX_CONFIG_BYTES => {
            problems
                .push(Problem::file("config.json", format!("is {} bytes; at most {MAX_CONFIG_BYTES} allowed", f.size)));
        }
        Some(f) => {
            let bytes = storage.read_blob_range(tenant_id, &f.digest, 0..f.size).await?;
            match check_config(task, &bytes) {
                Ok(arch) => architecture = Some(arch),
                Err(message) => problems.push(Problem::file("config.json", message)),
            }
        }
    }

    if architecture.as_deref() == Some(LSTM) {
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
                let ok = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .is_some_and(|v| v.get("model").is_some_and(Value::is_object));
                if !ok {
                    problems
                        .push(Problem::file("tokenizer.json", "is not a tokenizers JSON file (no \"model\" object)"));
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
    for f in gguf {
        if let Err(message) = check_gguf(storage, tenant_id, &f.digest, f.size).await? {
            problems.push(Problem::file(f.path.as_str(), message));
        }
    }
    for f in weights {
        if let Err(message) = check_safetensors(storage, tenant_id, &f.digest, f.size).await? {
            problems.push(Problem::file(f.path.as_str(), message));
        }
    }

    Ok(match architecture {
        Some(arch) if problems.is_empty() => Ok(arch),
        _ => Err(problems),
    })
}

/// The architectures (config.json `model_type`) the runner serves for `task`.
pub fn supported(task: Task) -> Vec<&'static str> {
    SUPPORTED.iter().filter(|(t, _)| *t == task).map(|(_, arch)| *arch).collect()
}

/// The architecture a config.json names, if it is one `task` supports with the fields its
/// family needs; else what is wrong, for the caller.
pub fn check_config(task: Task, bytes: &[u8]) -> Result<String, String> {
    let config: Value = serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON: {e}"))?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or("has no \"model_type\"; cannot tell the architecture")?;
    if !SUPPORTED.iter().any(|(t, arch)| *t == task && *arch == model_type) {
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

/// Reads only the first bytes: the GGUF magic and a format version this runner reads (2 or 3).
async fn check_gguf(storage: &Storage, tenant_id: &str, digest: &Digest, size: u64) -> Result<Result<(), String>> {
    if size < 24 {
        return Ok(Err("is too short to be a GGUF file".into()));
    }
    let head = storage.read_blob_range(tenant_id, digest, 0..8).await?;
    if &head[..4] != b"GGUF" {
        return Ok(Err("is not a GGUF file (no GGUF magic)".into()));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    Ok(if matches!(version, 2 | 3) {
        Ok(())
    } else {
        Err(format!("is GGUF version {version}; versions 2 and 3 are read"))
    })
}

/// Reads only the header: length prefix, then the JSON table of tensors.
async fn check_safetensors(
    storage: &Storage,
    tenant_id: &str,
    digest: &Digest,
    size: u64,
) -> Result<Result<(), String>> {
    if size < 8 {
        return Ok(Err(format!("is {size} bytes, shorter than the 8-byte header length")));
    }
    let prefix = storage.read_blob_range(tenant_id, digest, 0..8).await?;
    let prefix: [u8; 8] = prefix.as_ref().try_into().map_err(|_| Error::Invalid("short read".into()))?;
    let header_len = match header_length(prefix, size) {
        Ok(n) => n,
        Err(problem) => return Ok(Err(problem)),
    };
    let header = storage.read_blob_range(tenant_id, digest, 8..8 + header_len).await?;
    Ok(check_safetensors_header(&header, size - 8 - header_len))
}

/// The header's length from a safetensors file's first 8 bytes, if it fits the file.
fn header_length(prefix: [u8; 8], size: u64) -> Result<u64, String> {
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_SAFETENSORS_HEADER {
        return Err(format!("header length {header_len} exceeds the {MAX_SAFETENSORS_HEADER}-byte bound"));
    }
    if header_len.checked_add(8).is_none_or(|end| end > size) {
        return Err(format!("header length {header_len} runs past the end of the {size}-byte file"));
    }
    Ok(header_len)
}

/// The commit-time check of a whole safetensors file in memory: what the registry reads of
/// a stored one (length prefix and header), with the same verdicts. For the fuzz targets.
pub fn check_safetensors_bytes(file: &[u8]) -> Result<(), String> {
    let size = file.len() as u64;
    let Some(prefix) = file.get(..8).and_then(|p| <[u8; 8]>::try_from(p).ok()) else {
        return Err(format!("is {size} bytes, shorter than the 8-byte header length"));
    };
    let header_len = header_length(prefix, size)?;
    let header = &file[8..8 + header_len as usize];
    check_safetensors_header(header, size - 8 - header_len)
}

fn check_safetensors_header(header: &[u8], data_len: u64) -> Result<(), String> {
    let table: serde_json::Map<String, Value> =
        serde_json::from_slice(header).map_err(|e| format!("header is not a JSON object: {e}"))?;
    let mut problems = Vec::new();
    let mut tensors = 0usize;
    for (name, entry) in &table {
        if name == "__metadata__" {
            continue;
        }
        tensors += 1;
        if let Err(m) = check_tensor(entry, data_len) {
            problems.push(format!("tensor {name:?} {m}"));
        }
        if problems.len() >= 5 {
            problems.push("…".into());
            break;
        }
    }
    if tensors == 0 && problems.is_empty() {
        problems.push("holds no tensors".into());
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

fn check_tensor(entry: &Value, data_len: u64) -> Result<(), String> {
    let dtype = entry.get("dtype").and_then(Value::as_str).ok_or("has no dtype")?;
    let width: u64 = match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        other => return Err(format!("has unknown dtype {other:?}")),
    };
    let shape = entry.get("shape").and_then(Value::as_array).ok_or("has no shape")?;
    let mut elements: u64 = 1;
    for dim in shape {
        let dim = dim.as_u64().ok_or("has a shape that is not a list of non-negative integers")?;
        elements = elements.checked_mul(dim).ok_or("has a shape too large to address")?;
    }
    let offsets = entry.get("data_offsets").and_then(Value::as_array).ok_or("has no data_offsets")?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => (b.as_u64().ok_or("has a bad begin offset")?, e.as_u64().ok_or("has a bad end offset")?),
        _ => return Err("has data_offsets that are not [begin, end]".into()),
    };
    if begin > end || end > data_len {
        return Err(format!("has data_offsets [{begin}, {end}] outside the {data_len}-byte data section"));
    }
    if elements.checked_mul(width) != Some(end - begin) {
        return Err(format!("has {} bytes for {elements} {dtype} elements", end - begin));
    }
    Ok(())
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

    #[test]
    fn tensor_entries_must_fit_the_data_section() {
        let ok = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        assert_eq!(check_safetensors_header(ok, 16), Ok(()));
        assert!(check_safetensors_header(ok, 15).is_err_and(|m| m.contains("outside")));
        let wrong_len = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
        assert!(check_safetensors_header(wrong_len, 16).is_err_and(|m| m.contains("12") || m.contains("16 bytes")));
        let bad_dtype = br#"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#;
        assert!(check_safetensors_header(bad_dtype, 16).is_err_and(|m| m.contains("unknown dtype")));
        assert!(check_safetensors_header(b"[]", 0).is_err());
        assert!(check_safetensors_header(b"{}", 0).is_err_and(|m| m.contains("no tensors")));
    }
}
