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

use candle_core::Device;
use serde::Deserialize;

pub use bert_embedding::BertEmbedder;
pub use generation::{GenerateParams, Piece, TextGenerator};

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

impl LoadedModel {
    /// Loads the family that `task` and `config.json` name. Returns the model and the
    /// bytes its tensors take on the device.
    pub fn load(task: &str, files: &ModelFiles, device: &Device) -> Result<(Self, u64)> {
        let config: ModelConfig = files.read_json("config.json")?;
        match (task, config) {
            ("embedding", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load(config, files, device)?;
                Ok((LoadedModel::BertEmbedding(Box::new(model)), bytes))
            }
            ("classification", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load_classifier(config, files, device)?;
                Ok((LoadedModel::BertEmbedding(Box::new(model)), bytes))
            }
            ("classification", ModelConfig::LstmClassifier(config)) => {
                let (model, bytes) = lstm_classifier::LstmClassifier::load(config, files, device)?;
                Ok((LoadedModel::LstmClassification(Box::new(model)), bytes))
            }
            ("generation", ModelConfig::Llama(config)) => {
                let (model, bytes) = TextGenerator::load(config, files, device)?;
                Ok((LoadedModel::Generation(Box::new(model)), bytes))
            }
            ("generation", ModelConfig::Qwen2(config)) => {
                let (model, bytes) = TextGenerator::load_qwen2(config, files, device)?;
                Ok((LoadedModel::Generation(Box::new(model)), bytes))
            }
            (task, _) => Err(files.invalid(format!("no model family serves task {task:?} for this architecture"))),
        }
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

/// Every tensor of the version's top-level `.safetensors` files, on `device`, and the bytes
/// they take there.
fn load_weights(files: &ModelFiles, device: &Device) -> Result<(HashMap<String, candle_core::Tensor>, u64)> {
    let mut tensors = HashMap::new();
    for (path, local) in &files.paths {
        if path.ends_with(".safetensors") && !path.contains('/') {
            let loaded =
                candle_core::safetensors::load(local, device).map_err(|e| files.invalid(format!("{path}: {e}")))?;
            tensors.extend(loaded);
        }
    }
    if tensors.is_empty() {
        return Err(files.invalid("no .safetensors weights"));
    }
    let bytes = tensors.values().map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum();
    Ok((tensors, bytes))
}

/// candle's errors carry a backtrace after their first line when RUST_BACKTRACE is set;
/// callers get the message, not the runner's insides.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_owned()
}

fn inference(e: impl std::fmt::Display) -> Error {
    Error::Inference(first_line(&e.to_string()))
}
