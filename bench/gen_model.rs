//! Writes a small Llama-shaped model for the generation benchmark (`bench/generation.sh`):
//! 8 layers, width 512, a 32,000-word vocabulary (about 56 M parameters), with fixed
//! pseudo-random weights, once as safetensors (f32) and once as GGUF Q8_0, each with
//! config.json and a word-level tokenizer. Usage: gen_model OUT_DIR

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::llama::{Llama, LlamaConfig};
use runner::convert::{LlamaShape, llama_to_gguf};
use serde_json::json;

const VOCAB: usize = 32_000;
const HIDDEN: usize = 512;
const INTERMEDIATE: usize = 1408;
const LAYERS: usize = 8;
const HEADS: usize = 8;
const KV_HEADS: usize = 4;

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: gen_model OUT_DIR"))?;
    let out = Path::new(&out);
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "vocab_size": VOCAB, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 2048, "bos_token_id": 1,
        // An id outside the vocabulary: every generation runs to max_tokens.
        "eos_token_id": VOCAB + 1, "tie_word_embeddings": false
    });
    let varmap = VarMap::new();
    let llama_config: LlamaConfig = serde_json::from_value(config.clone())?;
    Llama::load(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu), &llama_config.into_config(false))?;
    for (name, var) in varmap.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?.iter() {
        let Ok((rows, cols)) = var.dims2() else { continue };
        let salt = name.len() as f64;
        let scale = 3f64.sqrt() / (cols as f64).sqrt();
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let x = ((i as f64 + salt * 7919.0) * 12.9898).sin() * 43_758.545_3;
                (((x - x.floor()) * 2.0 - 1.0) * scale) as f32
            })
            .collect();
        var.set(&Tensor::from_vec(values, (rows, cols), &Device::Cpu)?)?;
    }
    let vocab: serde_json::Map<String, serde_json::Value> =
        (0..VOCAB).map(|i| (if i == 0 { "<unk>".to_owned() } else { format!("w{i}") }, json!(i))).collect();
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    for dir in ["f32", "q8"] {
        std::fs::create_dir_all(out.join(dir))?;
        std::fs::write(out.join(dir).join("config.json"), config.to_string())?;
        std::fs::write(out.join(dir).join("tokenizer.json"), tokenizer.to_string())?;
    }
    varmap.save(out.join("f32/model.safetensors"))?;

    // GGUF: llama.cpp's names and layout, matrices in Q8_0.
    let tensors = candle_core::safetensors::load(out.join("f32/model.safetensors"), &Device::Cpu)?;
    let shape = LlamaShape {
        heads: HEADS,
        kv_heads: KV_HEADS,
        layers: LAYERS,
        hidden: HIDDEN,
        context: 2048,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
    };
    llama_to_gguf(&tensors, &shape, GgmlDType::Q8_0, &out.join("q8/model.gguf"))?;
    Ok(())
}
