//! The LSTM text classifier of the classic "deploy a model to the cloud" tutorial: words to
//! ids by a vocabulary, an embedding, one LSTM layer, a dense layer to one logit, a sigmoid.
//!
//! Its files: `config.json`
//! `{"model_type": "lstm_classifier", "vocab_size", "embedding_dim", "hidden_dim",
//!   "max_length", "labels": ["negative", "positive"], "lowercase": true}`,
//! `vocab.json` (`{"word": id}`; id 0 pads, id 1 is the unknown word) and `model.safetensors`
//! with `embedding.weight`, `lstm.{weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0}`
//! (PyTorch's names and gate order), `dense.weight` and `dense.bias`. Text is split on
//! anything but letters, digits and apostrophes, and cut to `max_length` words. The answer
//! is the probability of the second label (the first gets one minus it).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{LSTM, LSTMConfig, RNN as _};
use candle_nn::{Embedding, Linear, Module as _, VarBuilder};
use formats::admission::MAX_LSTM_LENGTH;
use serde::Deserialize;

use super::{Embedded, ModelFiles, inference};
use crate::error::Result;

const UNKNOWN: u32 = 1;

#[derive(Deserialize)]
pub struct LstmConfig {
    vocab_size: usize,
    embedding_dim: usize,
    hidden_dim: usize,
    max_length: usize,
    #[serde(default = "default_labels")]
    labels: Vec<String>,
    #[serde(default = "yes")]
    lowercase: bool,
}

fn default_labels() -> Vec<String> {
    vec!["negative".into(), "positive".into()]
}

fn yes() -> bool {
    true
}

pub struct LstmClassifier {
    embedding: Embedding,
    lstm: LSTM,
    dense: Linear,
    vocab: HashMap<String, u32>,
    config: LstmConfig,
    device: Device,
}

impl LstmClassifier {
    pub fn load(config: LstmConfig, files: &ModelFiles, device: &Device) -> Result<(Self, u64)> {
        if config.labels.len() != 2 || config.max_length == 0 || config.max_length as u64 > MAX_LSTM_LENGTH {
            return Err(
                files.invalid(format!("config.json needs two labels and a max_length from 1 to {MAX_LSTM_LENGTH}"))
            );
        }
        let vocab: HashMap<String, u32> = files.read_json("vocab.json")?;
        if let Some((word, id)) = vocab.iter().find(|(_, id)| **id as usize >= config.vocab_size) {
            return Err(
                files.invalid(format!("vocab.json gives {word:?} id {id}, past vocab_size {}", config.vocab_size))
            );
        }
        let (tensors, bytes) = super::load_weights(files, device, DType::F32)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let weights = |e: candle_core::Error| files.invalid(format!("weights do not fit config.json: {e}"));
        let embedding =
            candle_nn::embedding(config.vocab_size, config.embedding_dim, vb.pp("embedding")).map_err(weights)?;
        let lstm = candle_nn::rnn::lstm(config.embedding_dim, config.hidden_dim, LSTMConfig::default(), vb.pp("lstm"))
            .map_err(weights)?;
        let dense = candle_nn::linear(config.hidden_dim, 1, vb.pp("dense")).map_err(weights)?;
        Ok((Self { embedding, lstm, dense, vocab, config, device: device.clone() }, bytes))
    }

    pub fn labels(&self) -> &[String] {
        &self.config.labels
    }

    /// The word ids of a text (at least one: an empty text reads as one unknown word).
    fn ids(&self, text: &str) -> Vec<u32> {
        // `max_length` words are read, each a few dozen bytes at most: the rest is never split.
        let text = super::clip(text, super::input_bound(self.config.max_length, 1));
        let text = if self.config.lowercase { text.to_lowercase() } else { text.to_owned() };
        let mut ids: Vec<u32> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .take(self.config.max_length)
            .map(|w| self.vocab.get(w).copied().unwrap_or(UNKNOWN))
            .collect();
        if ids.is_empty() {
            ids.push(UNKNOWN);
        }
        ids
    }

    pub fn count_tokens(&self, text: &str) -> usize {
        self.ids(text).len()
    }

    /// `[1 - p, p]` per input, p the probability of the second label.
    pub fn classify(&self, inputs: &[&str]) -> Result<Vec<Embedded>> {
        inputs
            .iter()
            .map(|text| {
                let ids = self.ids(text);
                let tokens = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                let p = (|| {
                    let ids = Tensor::new(ids.as_slice(), &self.device)?.unsqueeze(0)?;
                    let states = self.lstm.seq(&self.embedding.forward(&ids)?)?;
                    let last = states.last().ok_or_else(|| candle_core::Error::Msg("no state".into()))?;
                    candle_nn::ops::sigmoid(&self.dense.forward(last.h())?)?.flatten_all()?.to_vec1::<f32>()
                })()
                .map_err(inference)?[0];
                Ok(Embedded { values: vec![1.0 - p, p], tokens })
            })
            .collect()
    }
}
