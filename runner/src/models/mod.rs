//! Model families. The version's `config.json` picks one through a serde-tagged enum;
//! each family is a file of its own.

mod bert_embedding;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Deserialize;

pub use bert_embedding::BertEmbedder;

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
        Error::ModelInvalid { model: self.model.clone(), reason: reason.into() }
    }
}

/// `config.json`, tagged by `model_type`.
#[derive(Deserialize)]
#[serde(tag = "model_type", rename_all = "snake_case")]
enum ModelConfig {
    Bert(candle_transformers::models::bert::Config),
}

/// What a request needs from a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub values: Vec<f32>,
    pub tokens: u32,
}

/// A model loaded on its device, owned by its worker thread.
pub enum LoadedModel {
    BertEmbedding(BertEmbedder),
}

impl LoadedModel {
    /// Loads the family that `task` and `config.json` name. Returns the model and the
    /// bytes its tensors take on the device.
    pub fn load(task: &str, files: &ModelFiles, device: &Device) -> Result<(Self, u64)> {
        let config: ModelConfig = files.read_json("config.json")?;
        match (task, config) {
            ("embedding", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load(config, files, device)?;
                Ok((LoadedModel::BertEmbedding(model), bytes))
            }
            (task, _) => Err(files.invalid(format!("no model family serves task {task:?} for this architecture"))),
        }
    }

    pub fn embed(&self, inputs: &[&str]) -> Result<Vec<Embedded>> {
        match self {
            LoadedModel::BertEmbedding(m) => m.embed(inputs),
        }
    }
}

fn inference(e: impl std::fmt::Display) -> Error {
    Error::Inference(e.to_string())
}
