//! Llama-family weights from safetensors to GGUF, named and laid out as llama.cpp's converter
//! writes them (q and k rows interleaved per head for its rotary embedding), with matrices in
//! any quantization candle writes (norms stay f32). The runner reads such files back; the
//! tests and benchmarks make their quantized models with it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Result, Tensor};

/// What GGUF's metadata says of a Llama-family model.
#[derive(Debug, Clone, Copy)]
pub struct LlamaShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub layers: usize,
    pub hidden: usize,
    pub context: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
}

/// Writes `tensors` (Hugging Face names) to `out` as GGUF with matrices in `dtype`.
pub fn llama_to_gguf(
    tensors: &HashMap<String, Tensor>,
    shape: &LlamaShape,
    dtype: GgmlDType,
    out: &Path,
) -> Result<()> {
    let get =
        |name: &str| tensors.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("no tensor {name}")));
    let permute = |t: Tensor, heads: usize| -> Result<Tensor> {
        let (rows, cols) = t.dims2()?;
        t.reshape((heads, 2, rows / heads / 2, cols))?.transpose(1, 2)?.reshape((rows, cols))
    };
    let mut named = vec![
        ("token_embd.weight".to_owned(), get("model.embed_tokens.weight")?),
        ("output_norm.weight".to_owned(), get("model.norm.weight")?),
    ];
    if let Ok(output) = get("lm_head.weight") {
        named.push(("output.weight".to_owned(), output));
    }
    for i in 0..shape.layers {
        let hf = |n: &str| get(&format!("model.layers.{i}.{n}.weight"));
        for (gguf, t) in [
            ("attn_q", permute(hf("self_attn.q_proj")?, shape.heads)?),
            ("attn_k", permute(hf("self_attn.k_proj")?, shape.kv_heads)?),
            ("attn_v", hf("self_attn.v_proj")?),
            ("attn_output", hf("self_attn.o_proj")?),
            ("ffn_gate", hf("mlp.gate_proj")?),
            ("ffn_down", hf("mlp.down_proj")?),
            ("ffn_up", hf("mlp.up_proj")?),
            ("attn_norm", hf("input_layernorm")?),
            ("ffn_norm", hf("post_attention_layernorm")?),
        ] {
            named.push((format!("blk.{i}.{gguf}.weight"), t));
        }
    }
    let quantized = named
        .iter()
        .map(|(n, t)| Ok((n.clone(), QTensor::quantize(t, if t.rank() == 1 { GgmlDType::F32 } else { dtype })?)))
        .collect::<Result<Vec<_>>>()?;
    let u = |n: usize| gguf_file::Value::U32(n as u32);
    let metadata = [
        ("general.architecture", gguf_file::Value::String("llama".into())),
        ("llama.attention.head_count", u(shape.heads)),
        ("llama.attention.head_count_kv", u(shape.kv_heads)),
        ("llama.block_count", u(shape.layers)),
        ("llama.embedding_length", u(shape.hidden)),
        ("llama.rope.dimension_count", u(shape.hidden / shape.heads)),
        ("llama.attention.layer_norm_rms_epsilon", gguf_file::Value::F32(shape.rms_norm_eps)),
        ("llama.rope.freq_base", gguf_file::Value::F32(shape.rope_theta)),
        ("llama.context_length", u(shape.context)),
    ];
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let qtensors: Vec<(&str, &QTensor)> = quantized.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(out)?, &metadata, &qtensors)
}
