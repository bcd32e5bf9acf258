//! Model families. The version's `config.json` picks one through a serde-tagged enum;
//! each family is a file of its own.

#[cfg_attr(
    not(test),
    expect(dead_code, reason = "the generation scheduler's batched decode step (issue 24) is its first user")
)]
mod batched;
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
pub use generation::{GenerateParams, Piece, Serving, TextGenerator};

use crate::device::Placement;
use crate::error::{Error, Result};
use crate::template::Renderer;

/// The local copies of a version's files, by their path in the version. Its reads block: they
/// run on the model's own thread or on tokio's blocking pool, never on the async runtime.
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

    /// Admits the version before anything is allocated for it: its config.json checked
    /// against its weights' headers (formats::admission), its tokenizer against the bounds a
    /// tenant's tokenizer must keep. Reads headers only.
    pub fn admit(&self, task: &str, max_context: u64) -> Result<Admitted> {
        let config = self.require("config.json")?;
        if std::fs::metadata(config)?.len() > MAX_CONFIG_BYTES {
            return Err(self.invalid(format!("config.json is larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let config = std::fs::read(config)?;
        let mut weights = formats::Weights::default();
        for (path, local) in self.top_level() {
            let size = std::fs::metadata(local)?.len();
            if path.ends_with(".safetensors") {
                let mut file = std::io::BufReader::new(std::fs::File::open(local)?);
                let tensors =
                    formats::safetensors::read(&mut file, size).map_err(|e| self.invalid(format!("{path}: {e}")))?;
                weights.tensors.extend(tensors);
            } else if path.ends_with(".gguf") {
                use std::io::Read as _;
                let mut parsed = Err(formats::gguf::Error::Truncated);
                for wanted in formats::gguf::reads(size) {
                    let mut head = Vec::new();
                    std::fs::File::open(local)?.take(wanted).read_to_end(&mut head)?;
                    parsed = formats::gguf::parse(&head, size);
                    if !matches!(parsed, Err(formats::gguf::Error::Truncated)) {
                        break;
                    }
                }
                let header = parsed.map_err(|e| self.invalid(format!("{path}: {e}")))?;
                weights.gguf = Some((header, size));
            }
        }
        let plan = formats::admit(task, &config, &weights).map_err(|problems| self.invalid(problems.join("; ")))?;
        let (tokenizer_bytes, growth) = match self.get("tokenizer.json") {
            Some(path) => {
                let bytes = std::fs::read(path)?;
                let facts = formats::tokenizer::check(&bytes)
                    .map_err(|problems| self.invalid(format!("tokenizer.json {}", problems.join("; "))))?;
                (bytes.len() as u64 * formats::tokenizer::MEMORY_PER_FILE_BYTE, facts.growth)
            }
            None => (0, 1),
        };
        let context = plan.served_context(max_context);
        Ok(Admitted { plan, context, tokenizer_bytes, growth })
    }

    /// The version's top-level files: the weights a runner loads are these.
    fn top_level(&self) -> impl Iterator<Item = (&String, &PathBuf)> {
        self.paths.iter().filter(|(path, _)| !path.contains('/'))
    }

    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::ModelInvalid { model: self.model.clone(), reason: first_line(&reason.into()) }
    }
}

/// Bound on a config.json (the registry's own).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Bytes of an input read per token a model takes: no tokenizer gives a token more than a few
/// dozen bytes of text, so an input is cut (embeddings) or refused (prompts) past this, before
/// it is tokenized.
const BYTES_PER_TOKEN: usize = 64;
/// The most text a tokenizer's normalizer may make of one input: an input's bound is this over
/// the normalizer's growth (a tokenizer holds ~17 bytes per normalized byte while it works).
const MAX_NORMALIZED_BYTES: u64 = 8 << 20;

/// The most bytes of an input a model of `tokens` tokens reads, with a tokenizer that grows
/// text `growth`-fold.
pub(crate) fn input_bound(tokens: usize, growth: u64) -> usize {
    let normalized = usize::try_from(MAX_NORMALIZED_BYTES / growth.max(1)).unwrap_or(usize::MAX);
    tokens.saturating_mul(BYTES_PER_TOKEN).min(normalized)
}

/// The start of `text`, at most `max` bytes, cut at a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What admission allowed a load.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub plan: formats::Plan,
    /// Positions a generation may span here: the declared context, at most the runner's.
    pub context: u64,
    /// What the tokenizer is counted to take in host memory.
    pub tokenizer_bytes: u64,
    /// How many times longer the tokenizer's normalizer may make a text.
    pub growth: u64,
}

impl Admitted {
    /// Bytes the model takes beyond its tensors: its rotary tables and KV cache at the served
    /// context, and, where the budget is host memory, its tokenizer.
    pub fn extra_bytes(&self, float_bytes: u64, host: bool) -> u64 {
        let positions = self.plan.bytes(float_bytes, self.context) - self.plan.bytes(float_bytes, 0);
        positions + if host { self.tokenizer_bytes } else { 0 }
    }

    /// What the model will take once loaded, with floating-point values of `float_bytes`.
    pub fn estimate(&self, float_bytes: u64, host: bool) -> u64 {
        self.plan.bytes(float_bytes, 0) + self.extra_bytes(float_bytes, host)
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
    /// Loads the family that `task` and `config.json` name, as `admitted` (every size it
    /// builds by was confirmed there). Returns the model and its cost: the bytes its tensors
    /// take on the CPU, the device memory it took on a GPU, and in both what `admitted` counts
    /// beyond them (KV cache, rotary tables, tokenizer).
    pub fn load(
        task: &str,
        files: &ModelFiles,
        placement: &Placement,
        admitted: &Admitted,
        renderer: &Renderer,
    ) -> Result<(Self, u64)> {
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
        let context = usize::try_from(admitted.context).map_err(|_| files.invalid("a context too large"))?;
        let serving =
            Serving { context, max_input_bytes: input_bound(context, admitted.growth), renderer: renderer.clone() };
        let float_bytes = if task == "generation" { generator } else { encoder }.size_in_bytes() as u64;
        let (model, bytes) = placement.measure_load(|| match (task, config) {
            ("embedding", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load(config, files, device, encoder, admitted.growth)?;
                Ok((LoadedModel::BertEmbedding(Box::new(model)), bytes))
            }
            ("classification", ModelConfig::Bert(config)) => {
                let (model, bytes) = BertEmbedder::load_classifier(config, files, device, encoder, admitted.growth)?;
                Ok((LoadedModel::BertEmbedding(Box::new(model)), bytes))
            }
            // A few thousand weights run step by step: f32 everywhere.
            ("classification", ModelConfig::LstmClassifier(config)) => {
                let (model, bytes) = lstm_classifier::LstmClassifier::load(config, files, device)?;
                Ok((LoadedModel::LstmClassification(Box::new(model)), bytes))
            }
            ("generation", ModelConfig::Llama(config)) => {
                let (model, bytes) = TextGenerator::load(config, files, device, generator, &serving)?;
                Ok((LoadedModel::Generation(Box::new(model)), bytes))
            }
            ("generation", ModelConfig::Qwen2(config)) => {
                let (model, bytes) = TextGenerator::load_qwen2(config, files, device, generator, &serving)?;
                Ok((LoadedModel::Generation(Box::new(model)), bytes))
            }
            (task, _) => Err(files.invalid(format!("no model family serves task {task:?} for this architecture"))),
        })?;
        Ok((model, bytes + admitted.extra_bytes(float_bytes, device.is_cpu())))
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
    fn every_family_the_registry_admits_is_one_the_runner_loads() {
        for (task, model_type) in formats::families::FAMILIES {
            let config = serde_json::json!({ "model_type": model_type });
            // Its fields are missing; its tag must be known.
            let error = ModelConfig::deserialize(config).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!error.contains("unknown variant"), "{task} {model_type}: {error}");
        }
    }

    /// A BERT-shaped encoder's files: embeddings and one layer's intermediate weights (all
    /// the admission reads), an integer tensor besides, config and tokenizer.
    fn encoder_files(dir: &Path, max_positions: usize) -> ModelFiles {
        let zeros = |shape: &[usize], dtype| candle_core::Tensor::zeros(shape, dtype, &Device::Cpu).expect("tensor");
        let tensors = HashMap::from([
            ("embeddings.word_embeddings.weight", zeros(&[30, 8], DType::F32)),
            ("embeddings.position_embeddings.weight", zeros(&[max_positions, 8], DType::F32)),
            ("embeddings.token_type_embeddings.weight", zeros(&[2, 8], DType::BF16)),
            ("encoder.layer.0.intermediate.dense.weight", zeros(&[16, 8], DType::F32)),
            ("ids", zeros(&[7], DType::I64)),
        ]);
        let weights = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights).expect("saved");
        let config = serde_json::json!({"model_type": "bert", "vocab_size": 30, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": max_positions});
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
        std::fs::write(dir.join("tokenizer.json"), r#"{"model": {"type": "WordLevel", "vocab": {}}}"#).expect("tok");
        let paths = ["model.safetensors", "config.json", "tokenizer.json"].map(|p| (p.to_owned(), dir.join(p)));
        ModelFiles { model: "t/m@1".into(), paths: HashMap::from(paths) }
    }

    #[test]
    fn the_estimate_counts_floats_in_the_type_they_will_take_and_the_tokenizer_on_the_host() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = encoder_files(dir.path(), 64);
        let admitted = files.admit("embedding", 4096).expect("admitted");
        // 30·8 + 64·8 + 2·8 + 16·8 floating-point values and 7 eight-byte integers.
        let floats = 30 * 8 + 64 * 8 + 2 * 8 + 16 * 8;
        let tokenizer = std::fs::metadata(dir.path().join("tokenizer.json")).expect("size").len()
            * formats::tokenizer::MEMORY_PER_FILE_BYTE;
        assert_eq!(admitted.estimate(4, false), floats * 4 + 7 * 8);
        assert_eq!(admitted.estimate(2, false), floats * 2 + 7 * 8);
        assert_eq!(admitted.estimate(4, true), floats * 4 + 7 * 8 + tokenizer);

        std::fs::write(&files.paths["model.safetensors"], [255u8; 12]).expect("written");
        let err = files.admit("embedding", 4096).expect_err("a broken header");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }

    #[test]
    fn a_config_its_weights_do_not_confirm_is_refused_before_a_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = encoder_files(dir.path(), 64);
        let mut config: serde_json::Value = files.read_json("config.json").expect("config");
        config["num_hidden_layers"] = 1_000_000_000.into();
        std::fs::write(&files.paths["config.json"], config.to_string()).expect("config");
        let err = files.admit("embedding", 4096).expect_err("refused");
        assert!(err.to_string().contains("num_hidden_layers 1000000000"), "{err}");
    }

    #[test]
    fn inputs_are_bounded_by_the_model_and_its_tokenizer() {
        assert_eq!(input_bound(512, 3), 512 * BYTES_PER_TOKEN);
        assert_eq!(input_bound(1 << 20, 64), (MAX_NORMALIZED_BYTES / 64) as usize);
        assert_eq!(clip("héllo", 2), "h", "cut at a character boundary");
        assert_eq!(clip("hello", 10), "hello");
    }
}
