//! BERT-family sentence embeddings: encoder, then pooling and normalisation as the
//! model's sentence-transformers files say (mean pooling and L2 norm by default).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::bert::BertEncoder;
use super::bert_classification::ClassifierHead;
use super::{Embedded, ModelFiles, inference};
use crate::error::Result;

/// Inputs run through the encoder together; sorted by length first so padding stays small.
const SUB_BATCH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

pub struct BertEmbedder {
    model: BertEncoder,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    /// Set for sequence classification: the answer is label scores, not an embedding.
    head: Option<ClassifierHead>,
    /// Bytes of an input read at most: truncation to the model's length keeps no more, and the
    /// tokenizer never sees the rest.
    max_input_bytes: usize,
    device: Device,
}

impl BertEmbedder {
    /// A sequence classifier: the same encoder, with the classification head of its weights.
    /// `growth`: how many times longer its tokenizer's normalizer may make a text.
    pub fn load_classifier(
        config: Config,
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
        growth: u64,
    ) -> Result<(Self, u64)> {
        Self::load_with(config, files, device, dtype, growth, true)
    }

    pub fn load(config: Config, files: &ModelFiles, device: &Device, dtype: DType, growth: u64) -> Result<(Self, u64)> {
        Self::load_with(config, files, device, dtype, growth, false)
    }

    /// The labels a classifier scores, in the order of its scores.
    pub fn labels(&self) -> Option<&[String]> {
        self.head.as_ref().map(|h| h.labels.as_slice())
    }

    fn load_with(
        config: Config,
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
        growth: u64,
        classify: bool,
    ) -> Result<(Self, u64)> {
        // sentence-transformers layout: modules.json names the pooling folder and whether a
        // Normalize module follows. Without it: mean pooling, normalised, as all-MiniLM does.
        let modules: Option<Vec<Module>> =
            files.get("modules.json").map(|_| files.read_json("modules.json")).transpose()?;
        let (pooling_dir, normalize) = match &modules {
            Some(modules) => (
                modules.iter().find(|m| m.kind.ends_with("Pooling")).map(|m| m.path.clone()),
                modules.iter().any(|m| m.kind.ends_with("Normalize")),
            ),
            None => (Some("1_Pooling".to_owned()), true),
        };
        let pooling_file =
            pooling_dir.map(|d| if d.is_empty() { "config.json".to_owned() } else { format!("{d}/config.json") });
        let pooling = match pooling_file.filter(|p| p != "config.json" && files.get(p).is_some()) {
            Some(path) => {
                let c: PoolingConfig = files.read_json(&path)?;
                match (c.pooling_mode_mean_tokens, c.pooling_mode_cls_token) {
                    (true, _) => Pooling::Mean,
                    (false, true) => Pooling::Cls,
                    (false, false) => {
                        return Err(files.invalid(format!("{path} asks for a pooling mode other than mean or CLS")));
                    }
                }
            }
            None => Pooling::Mean,
        };
        let max_len = match files.get("sentence_bert_config.json") {
            Some(_) => files.read_json::<SentenceBertConfig>("sentence_bert_config.json")?.max_seq_length,
            None => None,
        }
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(files.require("tokenizer.json")?)
            .map_err(|e| files.invalid(format!("tokenizer.json: {e}")))?;
        let pad = tokenizer.get_padding().cloned().unwrap_or_default();
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_to_multiple_of: None,
            ..pad
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| files.invalid(format!("tokenizer.json truncation: {e}")))?;

        let (tensors, bytes) = super::load_weights(files, device, dtype)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let head = if classify { Some(ClassifierHead::load(&vb, files)?) } else { None };
        let model = BertEncoder::load(vb, &config)
            .map_err(|e| files.invalid(format!("weights do not match config.json: {e}")))?;
        let max_input_bytes = super::input_bound(max_len, growth);
        Ok((Self { model, tokenizer, pooling, normalize, head, max_input_bytes, device: device.clone() }, bytes))
    }

    /// Tokens of `text` after truncation, special tokens included (an input the tokenizer
    /// cannot read counts its bytes: it fails when it runs, with its own error).
    pub fn count_tokens(&self, text: &str) -> usize {
        let text = super::clip(text, self.max_input_bytes);
        self.tokenizer.encode_fast(text, true).map_or(text.len(), |e| e.len())
    }

    pub fn embed(&self, inputs: &[&str]) -> Result<Vec<Embedded>> {
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| inputs[i].len());
        let mut out: Vec<Option<Embedded>> = vec![None; inputs.len()];
        for chunk in order.chunks(SUB_BATCH) {
            let texts: Vec<&str> = chunk.iter().map(|&i| inputs[i]).collect();
            for (&i, e) in chunk.iter().zip(self.embed_batch(&texts)?) {
                out[i] = Some(e);
            }
        }
        out.into_iter().map(|e| e.ok_or_else(|| inference("an input was not embedded"))).collect()
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Embedded>> {
        let texts: Vec<&str> = texts.iter().map(|t| super::clip(t, self.max_input_bytes)).collect();
        let encodings = self.tokenizer.encode_batch(texts.clone(), true).map_err(inference)?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        let mut tokens = Vec::with_capacity(texts.len());
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
            tokens.push(e.get_attention_mask().iter().sum::<u32>());
        }
        let shape = (texts.len(), len);
        let ids = Tensor::from_vec(ids, shape, &self.device).map_err(inference)?;
        let mask = Tensor::from_vec(mask, shape, &self.device).map_err(inference)?;
        let type_ids = ids.zeros_like().map_err(inference)?;
        let hidden = self.model.forward(&ids, &type_ids, &mask).map_err(inference)?;
        if let Some(head) = &self.head {
            let rows: Vec<Vec<f32>> = head.scores(&hidden)?.to_vec2().map_err(inference)?;
            return Ok(rows.into_iter().zip(tokens).map(|(values, tokens)| Embedded { values, tokens }).collect());
        }
        // Pooling and normalisation in f32, whatever the encoder ran in.
        let hidden = hidden.to_dtype(DType::F32).map_err(inference)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            Pooling::Mean => (|| {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)
            })(),
        }
        .map_err(inference)?;
        let pooled = if self.normalize {
            (|| {
                let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
                pooled.broadcast_div(&norm)
            })()
            .map_err(inference)?
        } else {
            pooled
        };
        let rows: Vec<Vec<f32>> = pooled.to_vec2().map_err(inference)?;
        Ok(rows.into_iter().zip(tokens).map(|(values, tokens)| Embedded { values, tokens }).collect())
    }
}
