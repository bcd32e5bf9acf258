//! Sequence classification with a BERT encoder (`BertForSequenceClassification`): the
//! `[CLS]` state through the pooler (dense + tanh) and the classifier, then softmax (or a
//! sigmoid per label for `multi_label_classification`); labels from `id2label`.

use std::collections::BTreeMap;

use candle_core::{D, DType, Tensor};
use candle_nn::{Linear, Module as _, VarBuilder};
use serde::Deserialize;

use super::{ModelFiles, inference};
use crate::error::Result;

#[derive(Deserialize)]
struct HeadConfig {
    hidden_size: usize,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    #[serde(default)]
    problem_type: Option<String>,
}

pub struct ClassifierHead {
    pooler: Linear,
    classifier: Linear,
    multi_label: bool,
    pub labels: Vec<String>,
}

impl ClassifierHead {
    pub fn load(vb: &VarBuilder, files: &ModelFiles) -> Result<Self> {
        let config: HeadConfig = files.read_json("config.json")?;
        // id2label maps "0", "1", … to names; a gap would leave a score without a name.
        let mut labels = Vec::with_capacity(config.id2label.len());
        for i in 0..config.id2label.len() {
            let label = config.id2label.get(&i.to_string());
            labels.push(label.cloned().ok_or_else(|| files.invalid(format!("config.json id2label lacks id {i}")))?);
        }
        if labels.is_empty() {
            return Err(files.invalid("config.json has no id2label: a classifier needs its labels"));
        }
        let linear = |prefix: &str, inputs: usize, outputs: usize| {
            let vb = vb.pp(prefix);
            let weight =
                vb.get((outputs, inputs), "weight").map_err(|e| files.invalid(format!("{prefix}.weight: {e}")))?;
            let bias = vb.get(outputs, "bias").map_err(|e| files.invalid(format!("{prefix}.bias: {e}")))?;
            Ok::<_, crate::error::Error>(Linear::new(weight, Some(bias)))
        };
        let h = config.hidden_size;
        let pooler = linear("bert.pooler.dense", h, h).or_else(|_| linear("pooler.dense", h, h))?;
        let classifier = linear("classifier", h, labels.len())?;
        Ok(Self {
            pooler,
            classifier,
            multi_label: config.problem_type.as_deref() == Some("multi_label_classification"),
            labels,
        })
    }

    /// Label scores (batch, labels), in f32, from the encoder's states (batch, tokens, hidden).
    pub fn scores(&self, hidden: &Tensor) -> Result<Tensor> {
        (|| {
            let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
            let pooled = self.pooler.forward(&cls)?.tanh()?;
            let logits = self.classifier.forward(&pooled)?.to_dtype(DType::F32)?;
            if self.multi_label {
                candle_nn::ops::sigmoid(&logits)
            } else {
                candle_nn::ops::softmax(&logits, D::Minus1)
            }
        })()
        .map_err(inference)
    }
}
