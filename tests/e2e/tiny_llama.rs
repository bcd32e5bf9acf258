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

fn config_json() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "vocab_size": SPECIAL.len() + WORDS.len(),
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 128,
        "bos_token_id": 1,
        "eos_token_id": 2,
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
    std::fs::create_dir_all(dir).expect("model folder");
    let config: LlamaConfig = serde_json::from_value(config_json()).expect("a valid Llama config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    Llama::load(vb, &config.into_config(false)).expect("random weights for every tensor");
    varmap.save(dir.join("model.safetensors")).expect("saving the weights");
    let write_json = |name: &str, v: Value| {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&v).expect("json")).expect("writing")
    };
    write_json("config.json", config_json());
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
