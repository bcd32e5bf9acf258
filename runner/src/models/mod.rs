//! Model families. The version's `config.json` picks one through a serde-tagged enum;
//! each family is a file of its own.

mod bert;
mod bert_classification;
mod bert_embedding;
mod fused;
mod generation;
mod lstm_classifier;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::Deserialize;

pub use bert_embedding::BertEmbedder;
pub use generation::{GenerateParams, Piece, TextGenerator};

use crate::device::Placement;
use crate::error::{Error, Result};

/// The local copies of a version's files, by their path in the version.
pub struct ModelFiles {
    pub model: String,
    pub paths: HashMap<String, PathBuf>,
}

impl ModelFiles {
    pub fn get(&self, path: &str) -> Option<&Path> {
        self.paths.get(path).map(PathBuf::as_path)
    }

    pub fn require(&self, path: &str) -> Result<&Path> {
        self.get(path).ok_or_else(|| self.invalid(format!("{path} is missing")))
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let bytes = std::fs::read(self.require(path)?)?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(format!("{path}: {e}")))
    }

    /// What the weights will take once loaded, read from their files: the values of the
    /// top-level safetensors files, floating-point ones at `float_bytes` each (the type they
    /// are converted to), and GGUF files as they are.
    pub fn weight_bytes(&self, float_bytes: u64) -> Result<u64> {
        let mut total = 0;
        for (path, local) in &self.paths {
            if path.contains('/') {
                continue;
            }
            if path.ends_with(".gguf") {
                total += std::fs::metadata(local)?.len();
            } else if path.ends_with(".safetensors") {
                let header = safetensors_header(local).map_err(|e| self.invalid(format!("{path}: {e}")))?;
                for (dtype, values) in header {
                    total += values
                        * if dtype.starts_with('F') || dtype == "BF16" { float_bytes } else { dtype_bytes(&dtype) };
                }
            }
        }
        Ok(total)
    }

    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::ModelInvalid { model: self.model.clone(), reason: first_line(&reason.into()) }
    }
}

/// `config.json`, tagged by `model_type`.
#[derive(Deserialize)]
#[serde(tag = "model_type", rename_all = "snake_case")]
enum ModelConfig {
    Bert(candle_transformers::models::bert::Config),
    Llama(candle_transformers::models::llama::LlamaConfig),
    Qwen2(candle_transformers::models::qwen2::Config),
    LstmClassifier(lstm_classifier::LstmConfig),
}

/// What a request needs from a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub values: Vec<f32>,
    pub tokens: u32,
}

/// A model loaded on its device, owned by its worker thread.
pub enum LoadedModel {
    BertEmbedding(Box<BertEmbedder>),
    Generation(Box<TextGenerator>),
    LstmClassification(Box<lstm_classifier::LstmClassifier>),
}

/// The floating-point type config.json says the weights are in (`torch_dtype`, or `dtype`
/// since transformers 5).
#[derive(Deserialize)]
struct DeclaredDtype {
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

impl LoadedModel {
    /// Loads the family that `task` and `config.json` name. Returns the model and its cost:
    /// the bytes its tensors take on the CPU, the device memory it took on a GPU.
    pub fn load(task: &str, files: &ModelFiles, placement: &Placement) -> Result<(Self, u64)> {
        let raw: serde_json::Value = files.read_json("config.json")?;
        let parse = |e: serde_json::Error| files.invalid(format!("config.json: {e}"));
        let declared = DeclaredDtype::deserialize(&raw).map_err(parse)?;
        let config = ModelConfig::deserialize(raw).map_err(parse)?;
        let declared = declared.dtype.or(declared.torch_dtype);
        // Encoders default to f16 on a GPU, as text-embeddings-inference does; generators to
        // bf16, whose range large activations need.
        let encoder = placement.dtype(declared.as_deref(), DType::F16);
        let generator = placement.dtype(declared.as_deref(), DType::BF16);
        let device = &placement.device;
        placement.measure_load(|| match (task, config) {
            ("embedding", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load(config, files, device, encoder)?;
                Ok((LoadedModel::BertEmbedding(Box::new(model)), bytes))
            }
            ("classification", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load_classifier(config, files, device, encoder)?;
                Ok((LoadedModel::BertEmbedding(Box::new(model)), bytes))
            }
            // A few thousand weights run step by step: f32 everywhere.
            ("classification", ModelConfig::LstmClassifier(config)) => {
                let (model, bytes) = lstm_classifier::LstmClassifier::load(config, files, device)?;
                Ok((LoadedModel::LstmClassification(Box::new(model)), bytes))
            }
            ("generation", ModelConfig::Llama(config)) => {
                let (model, bytes) = TextGenerator::load(config, files, device, generator)?;
                Ok((LoadedModel::Generation(Box::new(model)), bytes))
            }
            ("generation", ModelConfig::Qwen2(config)) => {
                let (model, bytes) = TextGenerator::load_qwen2(config, files, device, generator)?;
                Ok((LoadedModel::Generation(Box::new(model)), bytes))
            }
            (task, _) => Err(files.invalid(format!("no model family serves task {task:?} for this architecture"))),
        })
    }

    pub fn embed(&self, inputs: &[&str]) -> Result<Vec<Embedded>> {
        match self {
            LoadedModel::BertEmbedding(m) => m.embed(inputs),
            LoadedModel::LstmClassification(m) => m.classify(inputs),
            LoadedModel::Generation(_) => {
                Err(Error::InvalidRequest("this model generates text; it does not embed".into()))
            }
        }
    }

    /// The tokens each input counts after truncation (special tokens included): what the
    /// batcher weighs a request by.
    pub fn count_tokens(&self, inputs: &[String]) -> usize {
        match self {
            LoadedModel::BertEmbedding(m) => inputs.iter().map(|t| m.count_tokens(t)).sum(),
            LoadedModel::LstmClassification(m) => inputs.iter().map(|t| m.count_tokens(t)).sum(),
            LoadedModel::Generation(_) => 0,
        }
    }

    /// The labels a classifier's scores are for; None for other models.
    pub fn labels(&self) -> Option<Vec<String>> {
        match self {
            LoadedModel::BertEmbedding(m) => m.labels().map(<[String]>::to_vec),
            LoadedModel::LstmClassification(m) => Some(m.labels().to_vec()),
            LoadedModel::Generation(_) => None,
        }
    }

    /// Generates text, handing each piece to `emit` (which answers false to stop early).
    pub fn generate(&mut self, params: &GenerateParams, emit: impl FnMut(Piece) -> bool) -> Result<()> {
        match self {
            LoadedModel::Generation(m) => m.generate(params, emit),
            LoadedModel::BertEmbedding(_) | LoadedModel::LstmClassification(_) => {
                Err(Error::InvalidRequest("this model does not generate text".into()))
            }
        }
    }
}

/// Every tensor of the version's top-level `.safetensors` files on `device`, floating-point
/// ones as `dtype` (each converted there as it arrives, so at most one tensor is held twice),
/// and the bytes they take.
fn load_weights(
    files: &ModelFiles,
    device: &Device,
    dtype: DType,
) -> Result<(HashMap<String, candle_core::Tensor>, u64)> {
    let mut tensors = HashMap::new();
    for (path, local) in &files.paths {
        if path.ends_with(".safetensors") && !path.contains('/') {
            use candle_core::safetensors::{Load as _, SliceSafetensors};
            let invalid = |e: candle_core::Error| files.invalid(format!("{path}: {e}"));
            let data = std::fs::read(local)?;
            for (name, view) in SliceSafetensors::new(&data).map_err(invalid)?.tensors() {
                let tensor = view.load(device).map_err(invalid)?;
                let tensor = if tensor.dtype().is_float() { tensor.to_dtype(dtype).map_err(invalid)? } else { tensor };
                tensors.insert(name, tensor);
            }
        }
    }
    if tensors.is_empty() {
        return Err(files.invalid("no .safetensors weights"));
    }
    let bytes = tensors.values().map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum();
    Ok((tensors, bytes))
}

/// Each tensor's dtype (as safetensors names it: F32, BF16, I64, …) and number of values, read
/// from the file's header alone.
fn safetensors_header(path: &Path) -> std::result::Result<Vec<(String, u64)>, String> {
    use std::io::Read as _;
    #[derive(Deserialize)]
    struct Entry {
        dtype: String,
        shape: Vec<u64>,
    }
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| "shorter than a safetensors header".to_owned())?;
    let len = u64::from_le_bytes(len);
    // The registry checked the header at commit; a bound keeps a bad one from taking memory.
    if len > 100 * 1024 * 1024 {
        return Err(format!("a safetensors header of {len} bytes"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| "its header is cut short".to_owned())?;
    let entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header).map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, value)| {
            let entry: Entry = serde_json::from_value(value).map_err(|e| format!("tensor {name}: {e}"))?;
            Ok((entry.dtype, entry.shape.iter().product()))
        })
        .collect()
}

/// Bytes of one value of a safetensors dtype that is not floating point.
fn dtype_bytes(dtype: &str) -> u64 {
    match dtype {
        "I64" | "U64" => 8,
        "I32" | "U32" => 4,
        "I16" | "U16" => 2,
        _ => 1,
    }
}

/// candle's errors carry a backtrace after their first line when RUST_BACKTRACE is set;
/// callers get the message, not the runner's insides.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_owned()
}

fn inference(e: impl std::fmt::Display) -> Error {
    Error::Inference(first_line(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_bytes_count_floats_in_the_type_they_will_take() {
        let dir = tempfile::tempdir().expect("temp dir");
        let weights = dir.path().join("model.safetensors");
        let floats = candle_core::Tensor::zeros((3, 5), DType::F32, &Device::Cpu).expect("tensor");
        let ids = candle_core::Tensor::zeros(7, DType::I64, &Device::Cpu).expect("tensor");
        let half = candle_core::Tensor::zeros(4, DType::BF16, &Device::Cpu).expect("tensor");
        candle_core::safetensors::save(&HashMap::from([("w", floats), ("ids", ids), ("h", half)]), &weights)
            .expect("saved");
        let files = ModelFiles {
            model: "t/m@1".into(),
            paths: HashMap::from([("model.safetensors".to_owned(), weights), ("config.json".to_owned(), "x".into())]),
        };
        // 19 floating-point values and 7 eight-byte integers.
        assert_eq!(files.weight_bytes(4).expect("estimate"), 19 * 4 + 7 * 8);
        assert_eq!(files.weight_bytes(2).expect("estimate"), 19 * 2 + 7 * 8);

        std::fs::write(files.paths["model.safetensors"].clone(), [255u8; 12]).expect("written");
        let err = files.weight_bytes(4).expect_err("a broken header");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
}
