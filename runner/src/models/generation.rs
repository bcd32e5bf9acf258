//! Text generation with Llama-family models, from safetensors (f32 on the CPU, half precision
//! on a GPU by default) or from a quantized GGUF
//! file (any of candle's quantizations: Q8_0, Q4_K, …): a KV cache per request, sampling
//! (temperature, top-p, top-k, seed, repetition penalty), stop sequences, and the chat
//! template of `tokenizer_config.json`.

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig, LlamaEosToks};
use candle_transformers::models::quantized_llama::ModelWeights;
use candle_transformers::models::{quantized_qwen2, qwen2};
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::{ModelFiles, inference};
use crate::error::{Error, Result};
use crate::template::{Render, Renderer};

/// Tokens the repetition penalty looks back over.
const REPEAT_LAST_N: usize = 64;

/// What a generation asks for.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    pub prompt: Option<String>,
    /// `(role, content)` pairs, rendered with the chat template.
    pub messages: Vec<(String, String)>,
    pub max_tokens: usize,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: u64,
    pub repetition_penalty: Option<f32>,
    pub stop: Vec<String>,
    /// When the caller stops waiting: generation ends there, with DEADLINE_EXCEEDED.
    pub deadline: Option<std::time::Instant>,
}

/// One piece of generated text; the last one says why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    pub finish_reason: Option<&'static str>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    chat_template: Option<String>,
    bos_token: Option<TokenText>,
    eos_token: Option<TokenText>,
}

/// `tokenizer_config.json` writes special tokens as a string or as `{"content": …}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenText {
    Plain(String),
    Added { content: String },
}

impl TokenText {
    fn text(&self) -> &str {
        match self {
            TokenText::Plain(s) | TokenText::Added { content: s } => s,
        }
    }
}

/// The network: Llama or Qwen2, with full-precision weights or quantized ones (all but the
/// full-precision Llama keep their own KV cache, which a generation starting at position 0
/// resets or clears).
enum Backbone {
    /// `cache`: an empty KV cache with the rotary tables of the served context, built once;
    /// each generation starts from a copy (the tables are shared, not copied).
    Safetensors {
        model: Llama,
        cache: Cache,
    },
    Gguf {
        model: ModelWeights,
    },
    Qwen2 {
        model: Box<qwen2::ModelForCausalLM>,
    },
    GgufQwen2 {
        model: Box<quantized_qwen2::ModelWeights>,
    },
}

/// How a generator serves: the context admitted, the most prompt bytes it reads, and where its
/// chat template renders.
pub struct Serving {
    pub context: usize,
    pub max_input_bytes: usize,
    pub renderer: Renderer,
}

pub struct TextGenerator {
    backbone: Backbone,
    /// Tokens the model can attend to (prompt and generated).
    context: usize,
    /// Prompt bytes read at most (see `super::input_bound`): a longer prompt is refused before
    /// it is tokenized.
    max_prompt_bytes: usize,
    renderer: Renderer,
    tokenizer: Tokenizer,
    eos: Vec<u32>,
    template: Option<String>,
    bos_text: String,
    eos_text: String,
    device: Device,
}

impl TextGenerator {
    /// A Llama-family model serving `context` positions (admitted: at most what it declares);
    /// safetensors weights take `dtype` (GGUF ones stay as quantized).
    pub fn load(
        config: LlamaConfig,
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
        serving: &Serving,
    ) -> Result<(Self, u64)> {
        let context = serving.context;
        let eos = match &config.eos_token_id {
            Some(LlamaEosToks::Single(id)) => vec![*id],
            Some(LlamaEosToks::Multiple(ids)) => ids.clone(),
            None => Vec::new(),
        };
        let mut config = config.into_config(false);
        // The rotary tables cover the served context, not the declared one.
        config.max_position_embeddings = context;
        let (backbone, bytes) = match gguf_file_of(files) {
            Some(path) => {
                let (content, mut file, bytes) =
                    open_gguf(&path, files, embedding_bytes(config.vocab_size, config.hidden_size))?;
                let model = ModelWeights::from_gguf(content, &mut file, device)
                    .map_err(|e| files.invalid(format!("GGUF weights: {e}")))?;
                (Backbone::Gguf { model }, bytes)
            }
            None => {
                let (tensors, bytes) = super::load_weights(files, device, dtype)?;
                let vb = VarBuilder::from_tensors(tensors, dtype, device);
                let model = Llama::load(vb, &config)
                    .map_err(|e| files.invalid(format!("weights do not fit the config: {e}")))?;
                let cache = Cache::new(true, dtype, &config, device).map_err(inference)?;
                (Backbone::Safetensors { model, cache }, bytes)
            }
        };
        Self::assemble(backbone, serving, eos, files, device).map(|g| (g, bytes))
    }

    /// A Qwen2-family model serving `context` positions (safetensors weights take `dtype`); it
    /// keeps its own KV cache, cleared for each generation.
    pub fn load_qwen2(
        mut config: qwen2::Config,
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
        serving: &Serving,
    ) -> Result<(Self, u64)> {
        #[derive(Deserialize)]
        struct Eos {
            eos_token_id: Option<LlamaEosToks>,
        }
        let eos = match files.read_json::<Eos>("config.json")?.eos_token_id {
            Some(LlamaEosToks::Single(id)) => vec![id],
            Some(LlamaEosToks::Multiple(ids)) => ids,
            None => Vec::new(),
        };
        if let Some(path) = gguf_file_of(files) {
            let (content, mut file, bytes) =
                open_gguf(&path, files, embedding_bytes(config.vocab_size, config.hidden_size))?;
            let model = quantized_qwen2::ModelWeights::from_gguf(content, &mut file, device)
                .map_err(|e| files.invalid(format!("GGUF weights: {e}")))?;
            let backbone = Backbone::GgufQwen2 { model: Box::new(model) };
            return Self::assemble(backbone, serving, eos, files, device).map(|g| (g, bytes));
        }
        config.max_position_embeddings = serving.context;
        let (tensors, bytes) = super::load_weights(files, device, dtype)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let model = qwen2::ModelForCausalLM::new(&config, vb)
            .map_err(|e| files.invalid(format!("weights do not fit the config: {e}")))?;
        let backbone = Backbone::Qwen2 { model: Box::new(model) };
        Self::assemble(backbone, serving, eos, files, device).map(|g| (g, bytes))
    }

    /// The parts every family shares: tokenizer, chat template, special tokens.
    fn assemble(
        backbone: Backbone,
        serving: &Serving,
        eos: Vec<u32>,
        files: &ModelFiles,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(files.require("tokenizer.json")?)
            .map_err(|e| files.invalid(format!("tokenizer.json: {e}")))?;
        let tokenizer_config: TokenizerConfig = match files.get("tokenizer_config.json") {
            Some(_) => files.read_json("tokenizer_config.json")?,
            None => TokenizerConfig::default(),
        };
        let text = |t: &Option<TokenText>| t.as_ref().map(|t| t.text().to_owned()).unwrap_or_default();
        let generator = Self {
            backbone,
            context: serving.context,
            max_prompt_bytes: serving.max_input_bytes,
            renderer: serving.renderer.clone(),
            tokenizer,
            eos,
            template: tokenizer_config.chat_template.clone(),
            bos_text: text(&tokenizer_config.bos_token),
            eos_text: text(&tokenizer_config.eos_token),
            device: device.clone(),
        };
        Ok(generator)
    }

    /// The prompt text: the prompt as given, or the messages through the chat template (or,
    /// for a model without one, `role: content` lines and a last `assistant:`), at most
    /// `max_prompt_bytes`.
    fn prompt(&self, params: &GenerateParams) -> Result<String> {
        let prompt = match (&params.prompt, &self.template) {
            (Some(prompt), _) => prompt.clone(),
            (None, None) => {
                let mut text: String =
                    params.messages.iter().map(|(role, content)| format!("{role}: {content}\n")).collect();
                text.push_str("assistant:");
                text
            }
            (None, Some(template)) => self
                .renderer
                .render(&Render {
                    template: template.clone(),
                    messages: params.messages.clone(),
                    bos_token: self.bos_text.clone(),
                    eos_token: self.eos_text.clone(),
                    max_bytes: self.max_prompt_bytes,
                })
                .map_err(Error::InvalidRequest)?,
        };
        if prompt.len() > self.max_prompt_bytes {
            return Err(Error::InvalidRequest(format!(
                "the prompt is {} bytes; this model reads at most {} (its context of {} tokens)",
                prompt.len(),
                self.max_prompt_bytes,
                self.context
            )));
        }
        Ok(prompt)
    }

    /// Generates, handing each piece of text to `emit`; stops early when `emit` answers false
    /// (the client went away).
    pub fn generate(&mut self, params: &GenerateParams, mut emit: impl FnMut(Piece) -> bool) -> Result<()> {
        let prompt = self.prompt(params)?;
        let encoding = self.tokenizer.encode(prompt, true).map_err(inference)?;
        let mut tokens: Vec<u32> = encoding.get_ids().to_vec();
        let prompt_tokens = tokens.len();
        if prompt_tokens == 0 {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if prompt_tokens + params.max_tokens > self.context {
            return Err(Error::InvalidRequest(format!(
                "the prompt ({prompt_tokens} tokens) and max_tokens ({}) exceed the model's context of {} tokens",
                params.max_tokens, self.context
            )));
        }
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling(params));
        // A fresh KV cache per generation (a quantized model resets its own at position 0).
        let mut cache = match &mut self.backbone {
            Backbone::Safetensors { cache, .. } => Some(cache.clone()),
            Backbone::Gguf { .. } => None,
            Backbone::Qwen2 { model } => {
                model.clear_kv_cache();
                None
            }
            Backbone::GgufQwen2 { .. } => None,
        };
        let mut text = TextOut::new(&params.stop);
        let (mut index_pos, mut generated) = (0, 0usize);
        let counts = |generated: usize| {
            (u32::try_from(prompt_tokens).unwrap_or(u32::MAX), u32::try_from(generated).unwrap_or(u32::MAX))
        };
        let finish = loop {
            if generated == params.max_tokens {
                break "length";
            }
            if params.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Error::DeadlineExceeded);
            }
            let context = &tokens[index_pos..];
            let input = Tensor::new(context, &self.device).and_then(|t| t.unsqueeze(0)).map_err(inference)?;
            let logits = match (&mut self.backbone, cache.as_mut()) {
                (Backbone::Safetensors { model, .. }, Some(cache)) => model.forward(&input, index_pos, cache),
                (Backbone::Gguf { model }, _) => model.forward(&input, index_pos),
                // (batch, 1, vocab): the last position's logits.
                (Backbone::Qwen2 { model }, _) => model.forward(&input, index_pos).and_then(|l| l.squeeze(1)),
                (Backbone::GgufQwen2 { model }, _) => model.forward(&input, index_pos),
                (Backbone::Safetensors { .. }, None) => Err(candle_core::Error::Msg("no KV cache (a bug)".into())),
            }
            // The sampler reads f32, whatever the model computes in.
            .and_then(|l| l.squeeze(0)?.to_dtype(DType::F32))
            .map_err(inference)?;
            index_pos += context.len();
            let logits = match params.repetition_penalty {
                Some(penalty) if penalty != 1.0 => {
                    let start = tokens.len().saturating_sub(REPEAT_LAST_N);
                    candle_transformers::utils::apply_repeat_penalty(&logits, penalty, &tokens[start..])
                        .map_err(inference)?
                }
                _ => logits,
            };
            let next = sampler.sample(&logits).map_err(inference)?;
            tokens.push(next);
            generated += 1;
            if self.eos.contains(&next) {
                break "stop";
            }
            let decoded = self.tokenizer.decode(&tokens[prompt_tokens..], true).map_err(inference)?;
            let (ready, stopped) = text.push(&decoded);
            if !ready.is_empty() {
                let (p, c) = counts(generated);
                if !emit(Piece { text: ready, finish_reason: None, prompt_tokens: p, completion_tokens: c }) {
                    return Ok(());
                }
            }
            if stopped {
                break "stop";
            }
        };
        let (p, c) = counts(generated);
        emit(Piece { text: text.rest(), finish_reason: Some(finish), prompt_tokens: p, completion_tokens: c });
        Ok(())
    }
}

/// The version's GGUF weights file, if it has one.
fn gguf_file_of(files: &ModelFiles) -> Option<std::path::PathBuf> {
    files.paths.iter().find(|(p, _)| p.ends_with(".gguf") && !p.contains('/')).map(|(_, l)| l.clone())
}

/// Bytes of the token embeddings once expanded to f32 (quantized models keep every other
/// tensor as stored).
fn embedding_bytes(vocab: usize, hidden: usize) -> u64 {
    (vocab * hidden * 4) as u64
}

/// A GGUF file's header and the file positioned for its tensors, with the bytes the model
/// will take: the file's size plus the expanded embeddings.
fn open_gguf(
    path: &std::path::Path,
    files: &ModelFiles,
    embeddings: u64,
) -> Result<(gguf_file::Content, std::fs::File, u64)> {
    let mut file = std::fs::File::open(path)?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| files.invalid(format!("GGUF: {e}")))?;
    let bytes = std::fs::metadata(path)?.len() + embeddings;
    Ok((content, file, bytes))
}

fn sampling(params: &GenerateParams) -> Sampling {
    let temperature = params.temperature.unwrap_or(1.0);
    if temperature <= 0.0 {
        return Sampling::ArgMax;
    }
    // top_k 0 keeps every token, as in transformers (candle's sampler fails on an empty set).
    match (params.top_k.filter(|k| *k > 0), params.top_p) {
        (None, None) => Sampling::All { temperature },
        (Some(k), None) => Sampling::TopK { k, temperature },
        (None, Some(p)) => Sampling::TopP { p, temperature },
        (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
    }
}

/// Generated text on its way out: it holds back what could be the start of a stop sequence,
/// and ends at one.
struct TextOut<'a> {
    stop: &'a [String],
    /// Bytes of the decoded text already sent.
    sent: usize,
    decoded: String,
}

impl<'a> TextOut<'a> {
    fn new(stop: &'a [String]) -> Self {
        Self { stop, sent: 0, decoded: String::new() }
    }

    /// Takes the whole decoded text so far; answers what can be sent now, and whether a stop
    /// sequence ended it.
    fn push(&mut self, decoded: &str) -> (String, bool) {
        self.decoded = decoded.to_owned();
        if let Some(at) =
            self.stop.iter().filter_map(|s| self.decoded[self.sent..].find(s.as_str()).map(|i| self.sent + i)).min()
        {
            let ready = self.decoded[self.sent..at].to_owned();
            self.sent = self.decoded.len();
            self.decoded.truncate(at);
            return (ready, true);
        }
        // Hold back the longest tail that is the start of a stop sequence.
        let held = self
            .stop
            .iter()
            .flat_map(|s| (1..s.len()).filter(|n| s.is_char_boundary(*n)).map(move |n| &s[..n]))
            .filter(|prefix| self.decoded.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let mut end = self.decoded.len() - held;
        // A token may decode to half a character (shown as U+FFFD): keep it until it is whole.
        while end > self.sent && self.decoded[..end].ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        if end <= self.sent {
            return (String::new(), false);
        }
        let ready = self.decoded[self.sent..end].to_owned();
        self.sent = end;
        (ready, false)
    }

    /// What is left unsent when generation ends.
    fn rest(&self) -> String {
        self.decoded.get(self.sent..).unwrap_or_default().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by schemathesis: `top_k: 0` reached candle's sampler as an empty set and failed
    /// the request with a 502.
    #[test]
    fn top_k_zero_keeps_every_token() {
        let params = |top_k, top_p| GenerateParams { temperature: Some(0.7), top_k, top_p, ..Default::default() };
        assert!(matches!(sampling(&params(Some(0), None)), Sampling::All { .. }));
        assert!(matches!(sampling(&params(Some(0), Some(0.9))), Sampling::TopP { .. }));
        assert!(matches!(sampling(&params(Some(5), None)), Sampling::TopK { k: 5, .. }));
    }

    #[test]
    fn text_out_holds_back_possible_stop_sequences_and_ends_at_one() {
        let stop = vec!["END".to_owned()];
        let mut out = TextOut::new(&stop);
        assert_eq!(out.push("hello"), ("hello".to_owned(), false));
        assert_eq!(out.push("hello E"), (" ".to_owned(), false), "'E' could start END");
        assert_eq!(out.push("hello EN"), (String::new(), false));
        assert_eq!(out.push("hello ENx"), ("ENx".to_owned(), false), "not END after all");
        assert_eq!(out.push("hello ENx END more"), (" ".to_owned(), true));
        assert_eq!(out.rest(), "");
        let mut free = TextOut::new(&[]);
        assert_eq!(free.push("ab\u{FFFD}"), ("ab".to_owned(), false), "half a character waits");
        assert_eq!(free.push("abé"), ("é".to_owned(), false));
    }
}
