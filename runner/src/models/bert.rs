//! A BERT encoder shaped for batched inference on a CPU. It computes what Hugging Face's
//! `BertModel` computes (and candle's port of it), with the work laid out differently:
//! - the hidden states stay one (tokens, hidden) matrix, so every dense layer is one large
//!   matrix product instead of one small product per sentence;
//! - dense weights are stored transposed, as the product reads them (a weight used as a
//!   transposed view is repacked by every product: for a short input that copy costs more
//!   than the arithmetic);
//! - query, key and value are one product (their weights concatenated at load), with the
//!   1/sqrt(head size) of the scores folded into the query weights;
//! - on the CPU, attention runs per sentence and head straight from the QKV product, over real
//!   tokens only; the GELU with its bias, and each block's bias, residual and layer norm, run
//!   as one pass each (`fused.rs`). Elsewhere softmax runs fused over the last dimension.

use candle_core::{DType, Module as _, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};

use super::fused::ResidualNorm;
use candle_transformers::models::bert::{Config, HiddenAct};

/// A dense layer whose weight is stored transposed, (inputs, outputs) row-major: the layout
/// the matrix product reads without repacking it.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn new(weight: &Tensor, bias: Tensor) -> Result<Self> {
        Ok(Self { weight_t: weight.t()?.contiguous()?, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct Layer {
    qkv: Dense,
    /// The attention's output layer, its bias applied with the residual and the norm.
    attention_out: Dense,
    attention_norm: ResidualNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: ResidualNorm,
}

pub struct BertEncoder {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    activation: HiddenAct,
}

fn linear(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<(Tensor, Tensor)> {
    Ok((vb.get((outputs, inputs), "weight")?, vb.get(outputs, "bias")?))
}

fn dense(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<Dense> {
    let (weight, bias) = linear(vb, inputs, outputs)?;
    Dense::new(&weight, bias)
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(size, "weight")?, vb.get(size, "bias")?, eps))
}

impl BertEncoder {
    /// Loads weights named as `BertModel` names them, with or without a `bert.` prefix.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        if config.num_attention_heads == 0 || h % config.num_attention_heads != 0 {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            )
        }
        let head_size = h / config.num_attention_heads;
        let scale = 1.0 / (head_size as f64).sqrt();
        let e = vb.pp("embeddings");
        let embedding = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(e.pp(name).get((rows, h), "weight")?, h))
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let ((qw, qb), (kw, kb), (vw, vb_)) =
                (linear(a.pp("self.query"), h, h)?, linear(a.pp("self.key"), h, h)?, linear(a.pp("self.value"), h, h)?);
            let weight = Tensor::cat(&[(qw * scale)?, kw, vw], 0)?;
            let bias = Tensor::cat(&[(qb * scale)?, kb, vb_], 0)?;
            let attention_out = dense(a.pp("output.dense"), h, h)?;
            let output = dense(l.pp("output.dense"), config.intermediate_size, h)?;
            let residual_norm = |dense: &Dense, vb: VarBuilder| {
                ResidualNorm::new(dense.bias.clone(), vb.get(h, "weight")?, vb.get(h, "bias")?, eps)
            };
            layers.push(Layer {
                qkv: Dense::new(&weight, bias)?,
                attention_norm: residual_norm(&attention_out, a.pp("output.LayerNorm"))?,
                attention_out,
                intermediate: dense(l.pp("intermediate.dense"), h, config.intermediate_size)?,
                output_norm: residual_norm(&output, l.pp("output.LayerNorm"))?,
                output,
            });
        }
        Ok(Self {
            words: embedding("word_embeddings", config.vocab_size)?,
            positions: embedding("position_embeddings", config.max_position_embeddings)?,
            token_types: embedding("token_type_embeddings", config.type_vocab_size)?,
            embedding_norm: layer_norm(e.pp("LayerNorm"), h, eps)?,
            layers,
            heads: config.num_attention_heads,
            hidden: h,
            activation: config.hidden_act,
        })
    }

    /// Hidden states (batch, tokens, hidden) of `ids` (batch, tokens); `mask` is 1 for a real
    /// token and 0 for padding, which no token attends to.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let (h, heads) = (self.hidden, self.heads);
        let head_size = h / heads;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let x = (self.words.forward(ids)? + self.token_types.forward(type_ids)?)?
            .broadcast_add(&self.positions.forward(&positions)?)?;
        let mut x = self.embedding_norm.forward(&x)?.reshape((batch * len, h))?;
        // Converted once for every layer's attention.
        let mask = mask.to_dtype(DType::F32)?.contiguous()?;
        // 0 where attended, a large negative number where padded (-inf in half precision):
        // (batch, 1, 1, tokens), in the type the scores are in.
        let additive = ((&mask - 1.0)? * f64::from(f32::MAX))?.to_dtype(x.dtype())?.reshape((batch, 1, 1, len))?;
        // (tokens, h) -> (batch, heads, tokens, head size), contiguous for the batched product.
        let split = |t: Tensor| t.reshape((batch, len, heads, head_size))?.transpose(1, 2)?.contiguous();
        for layer in &self.layers {
            let product = x.matmul(&layer.qkv.weight_t)?;
            let context = match super::fused::attention(&product, &layer.qkv.bias, &mask, heads)? {
                Some(context) => context,
                None => {
                    let qkv = product.broadcast_add(&layer.qkv.bias)?;
                    let q = split(qkv.narrow(1, 0, h)?)?;
                    let k = split(qkv.narrow(1, h, h)?)?;
                    let v = split(qkv.narrow(1, 2 * h, h)?)?;
                    let scores = q.matmul(&k.t()?)?.broadcast_add(&additive)?;
                    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                    probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((batch * len, h))?
                }
            };
            let attended = layer.attention_norm.forward(&context.matmul(&layer.attention_out.weight_t)?, &x)?;
            let inner = match self.activation {
                // Bias and activation in one pass.
                HiddenAct::Gelu => {
                    super::fused::bias_gelu(&attended.matmul(&layer.intermediate.weight_t)?, &layer.intermediate.bias)?
                }
                HiddenAct::GeluApproximate => layer.intermediate.forward(&attended)?.gelu()?,
                HiddenAct::Relu => layer.intermediate.forward(&attended)?.relu()?,
            };
            x = layer.output_norm.forward(&inner.matmul(&layer.output.weight_t)?, &attended)?;
        }
        x.reshape((batch, len, h))
    }
}
