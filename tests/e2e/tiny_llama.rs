//! A tiny Llama made by the test itself with candle (random weights, a word-level tokenizer,
//! a chat template), and a reference generation that recomputes the whole sequence at every
//! step, without a KV cache.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
use serde_json::{Value, json};

const SPECIAL: [&str; 3] = ["<unk>", "<s>", "</s>"];
pub const WORDS: &[&str] = &[
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "hello",
    "world",
    "is",
    "eating",
    "food",
    "and",
    "then",
    "ran",
    "away",
    "quickly",
    "slowly",
    "red",
    "blue",
    "green",
    "big",
    "small",
    "house",
    "tree",
    "<user>",
    "<assistant>",
    "<system>",
    "says",
    "yes",
    "no",
    "maybe",
];
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

/// The model's width: the default is as small as works; Q4_K needs rows of 256.
#[derive(Clone, Copy)]
pub struct Size {
    pub hidden: usize,
    pub intermediate: usize,
    /// Tokens of context.
    pub context: usize,
    /// The end-of-sequence id; one outside the vocabulary never ends a generation early.
    pub eos: u32,
}

pub const TINY: Size = Size { hidden: 32, intermediate: 64, context: 128, eos: 2 };
/// Wide enough for Q4_K's 256-element rows.
pub const WIDE: Size = Size { hidden: 256, intermediate: 512, context: 128, eos: 2 };
/// Slow and never done early: a generation of thousands of tokens takes seconds.
pub const LONG: Size = Size { hidden: 256, intermediate: 512, context: 4096, eos: 9999 };
const HEADS: usize = 4;
const KV_HEADS: usize = 2;

fn config_json(size: Size) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": size.hidden,
        "intermediate_size": size.intermediate,
        "vocab_size": SPECIAL.len() + WORDS.len(),
        "num_hidden_layers": 2,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": size.context,
        "bos_token_id": 1,
        "eos_token_id": size.eos,
        "tie_word_embeddings": false
    })
}

fn tokenizer_json() -> Value {
    let (vocab, added) = crate::tiny_bert::vocabulary(&SPECIAL, WORDS);
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// Writes the tiny model into `dir`: config, weights, tokenizer and its chat template.
pub fn write(dir: &Path) {
    write_sized(dir, TINY);
}

pub fn write_sized(dir: &Path, size: Size) {
    std::fs::create_dir_all(dir).expect("model folder");
    let config: LlamaConfig = serde_json::from_value(config_json(size)).expect("a valid Llama config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Llama::load(vb, &config.into_config(false)).expect("a tensor for every weight");
    fill_deterministic(&varmap);
    varmap.save(dir.join("model.safetensors")).expect("saving the weights");
    let write_json = |name: &str, v: Value| {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&v).expect("json")).expect("writing")
    };
    write_json("config.json", config_json(size));
    write_json("tokenizer.json", tokenizer_json());
    write_json(
        "tokenizer_config.json",
        json!({"chat_template": CHAT_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"}),
    );
}

/// Greedy generation that runs the whole sequence through the model at every step (no KV
/// cache); answers the generated text as the tokenizer decodes it.
pub fn greedy_without_kv_cache(dir: &Path, prompt: &str, max_tokens: usize) -> (String, usize) {
    let config: LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("config");
    let config = config.into_config(false);
    let device = Device::Cpu;
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &device).expect("weights");
    let model = Llama::load(VarBuilder::from_tensors(tensors, DType::F32, &device), &config).expect("model");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    let mut tokens = tokenizer.encode(prompt, true).expect("encoded").get_ids().to_vec();
    let prompt_len = tokens.len();
    for _ in 0..max_tokens {
        let mut cache = Cache::new(false, DType::F32, &config, &device).expect("cache");
        let input = Tensor::new(tokens.as_slice(), &device).and_then(|t| t.unsqueeze(0)).expect("input");
        let logits = model.forward(&input, 0, &mut cache).and_then(|l| l.squeeze(0)).expect("logits");
        let next = logits.argmax(0).and_then(|t| t.to_scalar::<u32>()).expect("argmax");
        tokens.push(next);
        if next == 2 {
            break;
        }
    }
    let generated = &tokens[prompt_len..];
    let text = tokenizer.decode(generated, true).expect("decoded");
    (text, generated.len())
}

/// Writes `dir`'s weights to `out` as a GGUF file quantized to `dtype` (norms stay f32), as
/// llama.cpp's converter writes them.
pub fn write_gguf(dir: &Path, out: &Path, dtype: candle_core::quantized::GgmlDType) {
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("json");
    let size = |k: &str| config[k].as_u64().expect("a size") as usize;
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let shape = runner::convert::LlamaShape {
        heads: HEADS,
        kv_heads: KV_HEADS,
        layers: size("num_hidden_layers"),
        hidden: size("hidden_size"),
        context: size("max_position_embeddings"),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
    };
    runner::convert::llama_to_gguf(&tensors, &shape, dtype, out).expect("GGUF written");
}

/// The last position's logits for `prompt`, from the f32 safetensors and from a GGUF file.
pub fn logits_f32_and_gguf(dir: &Path, gguf: &Path, prompt: &str) -> (Vec<f32>, Vec<f32>) {
    use candle_core::quantized::gguf_file;
    use candle_transformers::models::quantized_llama::ModelWeights;
    let device = Device::Cpu;
    let config: LlamaConfig =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("config");
    let config = config.into_config(false);
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &device).expect("weights");
    let model = Llama::load(VarBuilder::from_tensors(tensors, DType::F32, &device), &config).expect("model");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    let ids = tokenizer.encode(prompt, true).expect("encoded").get_ids().to_vec();
    let input = Tensor::new(ids.as_slice(), &device).and_then(|t| t.unsqueeze(0)).expect("input");
    let mut cache = Cache::new(true, DType::F32, &config, &device).expect("cache");
    let full: Vec<f32> =
        model.forward(&input, 0, &mut cache).and_then(|l| l.squeeze(0)).and_then(|l| l.to_vec1()).expect("logits");
    let mut file = std::fs::File::open(gguf).expect("GGUF");
    let content = gguf_file::Content::read(&mut file).expect("GGUF content");
    let mut quantized = ModelWeights::from_gguf(content, &mut file, &device).expect("quantized model");
    let q: Vec<f32> =
        quantized.forward(&input, 0).and_then(|l| l.squeeze(0)).and_then(|l| l.to_vec1()).expect("logits");
    (full, q)
}

/// Replaces every matrix of `varmap` with the same values on every run (candle's CPU
/// generator cannot be seeded), so figures such as a quantization error are stable: uniform,
/// with a standard deviation of 1/sqrt(inputs), from a hash of the tensor's name and the
/// element's index.
fn fill_deterministic(varmap: &VarMap) {
    for (name, var) in varmap.data().lock().expect("the weights").iter() {
        let Ok((rows, cols)) = var.dims2() else { continue };
        let salt = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 1000;
        let scale = 3f64.sqrt() / (cols as f64).sqrt();
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let x = ((i as f64 + salt as f64 * 7919.0) * 12.9898).sin() * 43_758.545_3;
                ((x - x.floor()) * 2.0 - 1.0) * scale
            })
            .map(|v| v as f32)
            .collect();
        var.set(&Tensor::from_vec(values, (rows, cols), &Device::Cpu).expect("values")).expect("set");
    }
}

fn qwen2_config_json() -> Value {
    json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": SPECIAL.len() + WORDS.len(),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 128,
        "sliding_window": 128,
        "max_window_layers": 2,
        "tie_word_embeddings": false,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": false,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2
    })
}

/// Writes a tiny Qwen2 (same tokenizer and template as the Llama) into `dir`.
pub fn write_qwen2(dir: &Path) {
    use candle_transformers::models::qwen2;
    std::fs::create_dir_all(dir).expect("model folder");
    let config: qwen2::Config = serde_json::from_value(qwen2_config_json()).expect("a valid Qwen2 config");
    let varmap = VarMap::new();
    qwen2::ModelForCausalLM::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))
        .expect("a tensor for every weight");
    fill_deterministic(&varmap);
    varmap.save(dir.join("model.safetensors")).expect("saving the weights");
    let write_json = |name: &str, v: Value| {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&v).expect("json")).expect("writing")
    };
    write_json("config.json", qwen2_config_json());
    write_json("tokenizer.json", tokenizer_json());
    write_json("tokenizer_config.json", json!({"chat_template": CHAT_TEMPLATE, "eos_token": "</s>"}));
}

/// Greedy Qwen2 generation recomputing the whole sequence at every step.
pub fn qwen2_greedy_without_kv_cache(dir: &Path, prompt: &str, max_tokens: usize) -> String {
    use candle_transformers::models::qwen2;
    let config: qwen2::Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("config");
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let mut model = qwen2::ModelForCausalLM::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
        .expect("model");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
    let mut tokens = tokenizer.encode(prompt, true).expect("encoded").get_ids().to_vec();
    let prompt_len = tokens.len();
    for _ in 0..max_tokens {
        model.clear_kv_cache();
        let input = Tensor::new(tokens.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)).expect("input");
        let logits = model.forward(&input, 0).and_then(|l| l.flatten_all()).expect("logits");
        let next = logits.argmax(0).and_then(|t| t.to_scalar::<u32>()).expect("argmax");
        tokens.push(next);
        if next == 2 {
            break;
        }
    }
    tokenizer.decode(&tokens[prompt_len..], true).expect("decoded")
}

/// Writes the tiny Qwen2 of `dir` to `out` as GGUF (`dtype` for matrices; norms and biases
/// stay f32), named as llama.cpp names Qwen2 tensors (no q/k reordering: Qwen2's rotary
/// embedding is the half-split one).
pub fn write_qwen2_gguf(dir: &Path, out: &Path, dtype: candle_core::quantized::GgmlDType) {
    use candle_core::quantized::{QTensor, gguf_file};
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let mut named: Vec<(String, &Tensor)> = vec![
        ("token_embd.weight".into(), &tensors["model.embed_tokens.weight"]),
        ("output_norm.weight".into(), &tensors["model.norm.weight"]),
    ];
    for i in 0..2 {
        for (gguf, hf) in [
            ("attn_q.weight", "self_attn.q_proj.weight"),
            ("attn_q.bias", "self_attn.q_proj.bias"),
            ("attn_k.weight", "self_attn.k_proj.weight"),
            ("attn_k.bias", "self_attn.k_proj.bias"),
            ("attn_v.weight", "self_attn.v_proj.weight"),
            ("attn_v.bias", "self_attn.v_proj.bias"),
            ("attn_output.weight", "self_attn.o_proj.weight"),
            ("ffn_gate.weight", "mlp.gate_proj.weight"),
            ("ffn_down.weight", "mlp.down_proj.weight"),
            ("ffn_up.weight", "mlp.up_proj.weight"),
            ("attn_norm.weight", "input_layernorm.weight"),
            ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ] {
            named.push((format!("blk.{i}.{gguf}"), &tensors[&format!("model.layers.{i}.{hf}")]));
        }
    }
    let quantized: Vec<(String, QTensor)> = named
        .into_iter()
        .map(|(name, t)| {
            let kind = if t.rank() == 1 { candle_core::quantized::GgmlDType::F32 } else { dtype };
            (name, QTensor::quantize(t, kind).expect("quantized"))
        })
        .collect();
    let u32v = |n: usize| gguf_file::Value::U32(n as u32);
    let metadata = [
        ("general.architecture", gguf_file::Value::String("qwen2".into())),
        ("qwen2.attention.head_count", u32v(HEADS)),
        ("qwen2.attention.head_count_kv", u32v(KV_HEADS)),
        ("qwen2.block_count", u32v(2)),
        ("qwen2.embedding_length", u32v(32)),
        ("qwen2.context_length", u32v(128)),
        ("qwen2.attention.layer_norm_rms_epsilon", gguf_file::Value::F32(1e-6)),
        ("qwen2.rope.freq_base", gguf_file::Value::F32(10_000.0)),
    ];
    let metadata: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = quantized.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(out).expect("GGUF file");
    gguf_file::write(&mut file, &metadata, &tensors).expect("GGUF written");
}
