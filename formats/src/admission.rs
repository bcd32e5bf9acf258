//! Admission before allocation: what a version will allocate, computed from its config.json
//! and its weights' headers before anything is built, with every size the config declares
//! confirmed by the weights' shapes. A config may not ask a loader for a billion layers, a
//! vocabulary its embeddings lack, or a rotary table of four hundred million positions.
//!
//! Both sides run it: the registry at commit (problems tied to the file), the runner before a
//! load (a version committed before these checks, or a registry bypassed, still cannot make a
//! runner allocate from numbers its weights did not confirm).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::safetensors::TensorInfo;
use crate::{families, gguf};

/// Most positions a generator may declare (Qwen2.5-1M declares 1,010,000).
pub const MAX_CONTEXT: u64 = 1 << 20;
/// Most positions an encoder may declare: its attention is quadratic in the input's length.
pub const MAX_ENCODER_POSITIONS: u64 = 8192;
/// Most words the LSTM classifier reads of an input, one step each.
pub const MAX_LSTM_LENGTH: u64 = 4096;
/// The rotary table candle's quantized Llama builds whatever the file declares.
const GGUF_LLAMA_CONTEXT: u64 = 4096;

/// A version's weights, as their headers describe them.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    /// Every tensor of the top-level `.safetensors` files, by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The header of the version's GGUF file and the file's size, if it has one.
    pub gguf: Option<(gguf::Header, u64)>,
}

/// What a version will allocate once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// config.json's `model_type`.
    pub architecture: String,
    /// Floating-point weight values (they take the device's type when loaded).
    pub float_values: u64,
    /// Bytes that keep their size: integer tensors, and a GGUF file with its embeddings
    /// expanded to f32.
    pub fixed_bytes: u64,
    /// Positions a generation may span, as declared and bounded; None for encoders.
    pub context: Option<u64>,
    /// Values a generator keeps per position of its context: the rotary tables and the KV cache.
    pub values_per_position: u64,
    /// Whether per-position values are f32 whatever the device's type (quantized models).
    pub f32_positions: bool,
}

impl Plan {
    /// The context a runner serves: the declared one, at most `max`.
    pub fn served_context(&self, max: u64) -> u64 {
        self.context.map_or(0, |c| c.min(max))
    }

    /// Bytes the model takes with floating-point values of `float_bytes` and a context of
    /// `context` positions.
    pub fn bytes(&self, float_bytes: u64, context: u64) -> u64 {
        let position_bytes = if self.f32_positions { 4 } else { float_bytes };
        self.float_values
            .saturating_mul(float_bytes)
            .saturating_add(self.fixed_bytes)
            .saturating_add(self.values_per_position.saturating_mul(context).saturating_mul(position_bytes))
    }
}

/// Admits a version of `task` ("embedding", "classification", "generation") whose config.json
/// is `config`; answers its plan, or every problem found.
pub fn admit(task: &str, config: &[u8], weights: &Weights) -> Result<Plan, Vec<String>> {
    let raw: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| vec![format!("config.json is not valid JSON: {e}")])?;
    let model_type = raw.get("model_type").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    if !families::serves(task, &model_type) {
        return Err(vec![format!("config.json: no model family serves task {task:?} for {model_type:?}")]);
    }
    let mut check = Check { problems: Vec::new(), weights };
    let plan = match (task, model_type.as_str()) {
        ("embedding" | "classification", "bert") => check.config(raw).map(|c| check.bert(&c)),
        ("classification", families::LSTM) => check.config(raw).map(|c| check.lstm(&c)),
        ("generation", "llama" | "qwen2") => match &weights.gguf {
            // The GGUF file's own metadata sizes what candle's quantized loaders build.
            Some((header, size)) => Some(check.gguf(&model_type, header, *size)),
            None => check.config(raw).map(|c| check.decoder(&c, &model_type)),
        },
        // A family listed without its check here: refused, not guessed at.
        _ => return Err(vec![format!("config.json: task {task:?} for {model_type:?} has no admission check")]),
    };
    match plan {
        Some(Some(mut plan)) if check.problems.is_empty() => {
            plan.architecture = model_type;
            Ok(plan)
        }
        _ => Err(check.problems),
    }
}

struct Check<'a> {
    problems: Vec<String>,
    weights: &'a Weights,
}

#[derive(Deserialize)]
struct EncoderConfig {
    vocab_size: u64,
    hidden_size: u64,
    num_hidden_layers: u64,
    num_attention_heads: u64,
    intermediate_size: u64,
    max_position_embeddings: u64,
    #[serde(default = "two")]
    type_vocab_size: u64,
}

fn two() -> u64 {
    2
}

/// A product that saturates: a config's numbers are checked after they are multiplied.
fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1, |n, f| n.saturating_mul(*f))
}

#[derive(Deserialize)]
struct DecoderConfig {
    vocab_size: u64,
    hidden_size: u64,
    num_hidden_layers: u64,
    num_attention_heads: u64,
    num_key_value_heads: Option<u64>,
    intermediate_size: u64,
    max_position_embeddings: u64,
}

#[derive(Deserialize)]
struct LstmConfig {
    vocab_size: u64,
    embedding_dim: u64,
    hidden_dim: u64,
    max_length: u64,
}

impl Check<'_> {
    fn fail(&mut self, message: impl Into<String>) -> Option<Plan> {
        self.problems.push(message.into());
        None
    }

    fn config<T: DeserializeOwned>(&mut self, raw: serde_json::Value) -> Option<T> {
        serde_json::from_value(raw).map_err(|e| self.problems.push(format!("config.json: {e}"))).ok()
    }

    /// The shape of a safetensors tensor, or a problem naming it.
    fn shape(&mut self, name: &str) -> Option<Vec<u64>> {
        let found = self.weights.tensors.get(name).map(|t| t.shape.clone());
        if found.is_none() {
            self.problems.push(format!("the weights have no tensor {name:?}"));
        }
        found
    }

    /// Requires `name` to have `expected`'s shape, each dimension named after the config
    /// field it confirms.
    fn confirm(&mut self, name: &str, expected: &[(&str, u64)]) -> bool {
        let Some(shape) = self.shape(name) else { return false };
        let want: Vec<u64> = expected.iter().map(|(_, n)| *n).collect();
        if shape != want {
            let fields: Vec<String> = expected.iter().map(|(f, n)| format!("{f} {n}")).collect();
            self.problems
                .push(format!("config.json says {} but the weights' {name:?} has shape {shape:?}", fields.join(", ")));
            return false;
        }
        true
    }

    /// Requires the layers under `prefix` (`{prefix}{i}.…`) to be exactly 0..`declared`.
    fn layers(&mut self, prefix: &str, names: impl Iterator<Item = String>, declared: u64, field: &str) -> bool {
        let found: BTreeSet<u64> =
            names.filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect();
        let contiguous = found.iter().copied().eq(0..found.len() as u64);
        if found.len() as u64 != declared || !contiguous {
            self.problems.push(format!(
                "config.json says {field} {declared} but the weights hold {} layers under {prefix:?}",
                found.len()
            ));
            return false;
        }
        true
    }

    fn heads(&mut self, hidden: u64, heads: u64, kv_heads: u64) -> Option<u64> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            self.problems.push(format!("hidden size {hidden} is not a multiple of {heads} attention heads"));
            return None;
        }
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            self.problems.push(format!("{heads} attention heads are not a multiple of {kv_heads} key/value heads"));
            return None;
        }
        Some(hidden / heads)
    }

    /// Values and bytes of the safetensors weights.
    fn safetensors_totals(&self) -> (u64, u64) {
        self.weights.tensors.values().fold((0u64, 0u64), |(floats, fixed), t| {
            if t.is_float() {
                (floats.saturating_add(t.values), fixed)
            } else {
                (floats, fixed.saturating_add(t.values.saturating_mul(t.width())))
            }
        })
    }

    fn bert(&mut self, c: &EncoderConfig) -> Option<Plan> {
        let p = if self.weights.tensors.contains_key("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let h = c.hidden_size;
        if c.max_position_embeddings > MAX_ENCODER_POSITIONS {
            self.fail(format!(
                "config.json: max_position_embeddings {} is more than the {MAX_ENCODER_POSITIONS} an encoder may take",
                c.max_position_embeddings
            ));
        }
        self.heads(h, c.num_attention_heads, c.num_attention_heads);
        let embeddings = format!("{p}embeddings.");
        self.confirm(
            &format!("{embeddings}word_embeddings.weight"),
            &[("vocab_size", c.vocab_size), ("hidden_size", h)],
        );
        self.confirm(
            &format!("{embeddings}position_embeddings.weight"),
            &[("max_position_embeddings", c.max_position_embeddings), ("hidden_size", h)],
        );
        self.confirm(
            &format!("{embeddings}token_type_embeddings.weight"),
            &[("type_vocab_size", c.type_vocab_size), ("hidden_size", h)],
        );
        let prefix = format!("{p}encoder.layer.");
        let names: Vec<String> = self.weights.tensors.keys().cloned().collect();
        if self.layers(&prefix, names.into_iter(), c.num_hidden_layers, "num_hidden_layers") {
            self.confirm(
                &format!("{prefix}0.intermediate.dense.weight"),
                &[("intermediate_size", c.intermediate_size), ("hidden_size", h)],
            );
        }
        let (float_values, fixed_bytes) = self.safetensors_totals();
        Some(Plan {
            architecture: String::new(),
            float_values,
            fixed_bytes,
            context: None,
            values_per_position: 0,
            f32_positions: false,
        })
    }

    fn lstm(&mut self, c: &LstmConfig) -> Option<Plan> {
        if c.max_length == 0 || c.max_length > MAX_LSTM_LENGTH {
            self.fail(format!("config.json: max_length {} is not between 1 and {MAX_LSTM_LENGTH}", c.max_length));
        }
        let gates = c.hidden_dim.saturating_mul(4);
        self.confirm("embedding.weight", &[("vocab_size", c.vocab_size), ("embedding_dim", c.embedding_dim)]);
        self.confirm("lstm.weight_ih_l0", &[("4 × hidden_dim", gates), ("embedding_dim", c.embedding_dim)]);
        self.confirm("lstm.weight_hh_l0", &[("4 × hidden_dim", gates), ("hidden_dim", c.hidden_dim)]);
        self.confirm("dense.weight", &[("one output", 1), ("hidden_dim", c.hidden_dim)]);
        let (float_values, fixed_bytes) = self.safetensors_totals();
        // The classifier keeps f32 weights whatever the device: count them as fixed bytes.
        Some(Plan {
            architecture: String::new(),
            float_values: 0,
            fixed_bytes: fixed_bytes.saturating_add(float_values.saturating_mul(4)),
            context: None,
            values_per_position: 0,
            f32_positions: false,
        })
    }

    /// Llama or Qwen2 from safetensors.
    fn decoder(&mut self, c: &DecoderConfig, model_type: &str) -> Option<Plan> {
        let h = c.hidden_size;
        let kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
        let head_dim = self.heads(h, c.num_attention_heads, kv_heads)?;
        let context = self.context(c.max_position_embeddings, "config.json: max_position_embeddings")?;
        self.confirm("model.embed_tokens.weight", &[("vocab_size", c.vocab_size), ("hidden_size", h)]);
        let names: Vec<String> = self.weights.tensors.keys().cloned().collect();
        if self.layers("model.layers.", names.into_iter(), c.num_hidden_layers, "num_hidden_layers") {
            let layer = "model.layers.0.";
            self.confirm(
                &format!("{layer}self_attn.q_proj.weight"),
                &[("num_attention_heads × head size", product(&[c.num_attention_heads, head_dim])), ("hidden_size", h)],
            );
            self.confirm(
                &format!("{layer}self_attn.k_proj.weight"),
                &[("num_key_value_heads × head size", product(&[kv_heads, head_dim])), ("hidden_size", h)],
            );
            self.confirm(
                &format!("{layer}mlp.gate_proj.weight"),
                &[("intermediate_size", c.intermediate_size), ("hidden_size", h)],
            );
        }
        let (float_values, fixed_bytes) = self.safetensors_totals();
        // Rotary tables: Llama keeps cos and sin of head_dim / 2 per position, Qwen2 of head_dim.
        let rotary = if model_type == "qwen2" { 2 * head_dim } else { head_dim };
        let kv = product(&[2, c.num_hidden_layers, kv_heads, head_dim]);
        Some(Plan {
            architecture: String::new(),
            float_values,
            fixed_bytes,
            context: Some(context),
            values_per_position: rotary.saturating_add(kv),
            f32_positions: false,
        })
    }

    fn context(&mut self, declared: u64, field: &str) -> Option<u64> {
        if declared == 0 || declared > MAX_CONTEXT {
            self.problems.push(format!("{field} {declared} is not between 1 and the {MAX_CONTEXT} positions served"));
            return None;
        }
        Some(declared)
    }

    /// Llama or Qwen2 from a GGUF file: the metadata candle's loaders size things by must
    /// agree with the tensors.
    fn gguf(&mut self, model_type: &str, header: &gguf::Header, size: u64) -> Option<Plan> {
        let arch = header.metadata.get("general.architecture").and_then(gguf::Meta::as_str).unwrap_or_default();
        if arch != model_type {
            return self.fail(format!("the GGUF file is for {arch:?} but config.json says {model_type:?}"));
        }
        let mut meta = |key: &str| {
            let full = format!("{arch}.{key}");
            let value = header.get_u64(&full);
            if value.is_none() {
                self.problems.push(format!("the GGUF file has no integer {full:?}"));
            }
            value
        };
        let (blocks, hidden, heads) = (meta("block_count")?, meta("embedding_length")?, meta("attention.head_count")?);
        let kv_heads = header.get_u64(&format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
        let declared = header.get_u64(&format!("{arch}.context_length"));
        let head_dim = self.heads(hidden, heads, kv_heads)?;
        let context = match (arch, declared) {
            ("llama", declared) => declared.unwrap_or(GGUF_LLAMA_CONTEXT).min(GGUF_LLAMA_CONTEXT),
            (_, Some(declared)) => self.context(declared, &format!("the GGUF file's {arch}.context_length"))?,
            (_, None) => return self.fail(format!("the GGUF file has no integer \"{arch}.context_length\"")),
        };
        if let Some(rope) = header.get_u64(&format!("{arch}.rope.dimension_count"))
            && rope > head_dim
        {
            self.fail(format!("the GGUF file's rope.dimension_count {rope} is more than the head size {head_dim}"));
        }
        let experts = header.get_u64(&format!("{arch}.expert_count")).unwrap_or(0);
        if experts > 1 {
            let gates = header.tensors.get("blk.0.ffn_gate_exps.weight").map(|t| t.shape.first().copied());
            if gates != Some(Some(experts)) {
                self.fail(format!("the GGUF file declares {experts} experts its tensors do not hold"));
            }
        }
        let vocab = match header.tensors.get("token_embd.weight") {
            Some(t) if t.shape.len() == 2 && t.shape[1] == hidden => t.shape[0],
            Some(t) => {
                return self.fail(format!(
                    "the GGUF file's embedding_length {hidden} does not match token_embd.weight of shape {:?}",
                    t.shape
                ));
            }
            None => return self.fail("the GGUF file has no tensor \"token_embd.weight\""),
        };
        let names = header.tensors.keys().cloned();
        self.layers("blk.", names, blocks, &format!("the GGUF file's {arch}.block_count"));
        // candle's quantized Qwen2 builds f32 rotary tables (cos and sin of head_dim) for the
        // declared context whatever a runner serves; its Llama a fixed 4,096-position one.
        let rotary = if arch == "qwen2" { product(&[context, 2, head_dim, 4]) } else { 0 };
        Some(Plan {
            architecture: String::new(),
            float_values: 0,
            fixed_bytes: product(&[vocab, hidden, 4]).saturating_add(size).saturating_add(rotary),
            context: Some(context),
            values_per_position: product(&[2, blocks, kv_heads, head_dim]),
            f32_positions: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensor(shape: &[u64]) -> TensorInfo {
        let values = shape.iter().product();
        TensorInfo { dtype: "F32".into(), shape: shape.to_vec(), values, begin: 0, end: values * 4 }
    }

    fn llama_weights(layers: u64, hidden: u64, vocab: u64) -> Weights {
        let mut tensors = BTreeMap::new();
        tensors.insert("model.embed_tokens.weight".to_owned(), tensor(&[vocab, hidden]));
        for i in 0..layers {
            let l = format!("model.layers.{i}.");
            tensors.insert(format!("{l}self_attn.q_proj.weight"), tensor(&[hidden, hidden]));
            tensors.insert(format!("{l}self_attn.k_proj.weight"), tensor(&[hidden / 2, hidden]));
            tensors.insert(format!("{l}mlp.gate_proj.weight"), tensor(&[3 * hidden, hidden]));
        }
        Weights { tensors, gguf: None }
    }

    fn llama_config(layers: u64, context: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "model_type": "llama", "vocab_size": 32, "hidden_size": 16, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
            "max_position_embeddings": context
        }))
        .expect("json")
    }

    #[test]
    fn a_consistent_decoder_is_admitted_with_its_context_counted() {
        let plan = admit("generation", &llama_config(2, 64), &llama_weights(2, 16, 32)).expect("admitted");
        assert_eq!(plan.architecture, "llama");
        assert_eq!(plan.context, Some(64));
        // head size 4: rotary 4 + KV 2 × 2 layers × 2 heads × 4.
        assert_eq!(plan.values_per_position, 4 + 32);
        let weights = 32 * 16 + 2 * (16 * 16 + 8 * 16 + 48 * 16);
        assert_eq!(plan.float_values, weights);
        assert_eq!(plan.bytes(2, 10), weights * 2 + 36 * 10 * 2);
        assert_eq!(plan.served_context(32), 32);
    }

    #[test]
    fn a_billion_layers_the_weights_lack_is_refused() {
        let problems =
            admit("generation", &llama_config(1_000_000_000, 64), &llama_weights(1, 16, 32)).expect_err("refused");
        assert!(problems.iter().any(|p| p.contains("num_hidden_layers 1000000000")), "{problems:?}");
    }

    #[test]
    fn four_hundred_million_positions_are_refused() {
        let problems =
            admit("generation", &llama_config(1, 400_000_000), &llama_weights(1, 16, 32)).expect_err("refused");
        assert!(problems.iter().any(|p| p.contains("max_position_embeddings 400000000")), "{problems:?}");
    }

    #[test]
    fn sizes_the_weights_do_not_confirm_are_refused() {
        let problems = admit("generation", &llama_config(1, 64), &llama_weights(1, 16, 999)).expect_err("refused");
        assert!(problems.iter().any(|p| p.contains("vocab_size 32") && p.contains("[999, 16]")), "{problems:?}");
        let gap = {
            let mut w = llama_weights(3, 16, 32);
            w.tensors.retain(|name, _| !name.starts_with("model.layers.1."));
            w
        };
        assert!(admit("generation", &llama_config(2, 64), &gap).is_err(), "layers 0 and 2 are not 0..2");
    }

    #[test]
    fn encoders_and_lstms_are_bounded() {
        let mut tensors = BTreeMap::new();
        tensors.insert("embeddings.word_embeddings.weight".to_owned(), tensor(&[30, 8]));
        tensors.insert("embeddings.position_embeddings.weight".to_owned(), tensor(&[1_000_000, 8]));
        tensors.insert("embeddings.token_type_embeddings.weight".to_owned(), tensor(&[2, 8]));
        tensors.insert("encoder.layer.0.intermediate.dense.weight".to_owned(), tensor(&[16, 8]));
        let config = json!({"model_type": "bert", "vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 1_000_000});
        let weights = Weights { tensors, gguf: None };
        let problems = admit("embedding", &serde_json::to_vec(&config).expect("json"), &weights).expect_err("refused");
        assert!(problems.iter().any(|p| p.contains("more than the 8192")), "{problems:?}");

        let lstm = json!({"model_type": "lstm_classifier", "vocab_size": 10, "embedding_dim": 4, "hidden_dim": 3,
            "max_length": 1_000_000_000u64});
        let mut tensors = BTreeMap::new();
        tensors.insert("embedding.weight".to_owned(), tensor(&[10, 4]));
        tensors.insert("lstm.weight_ih_l0".to_owned(), tensor(&[12, 4]));
        tensors.insert("lstm.weight_hh_l0".to_owned(), tensor(&[12, 3]));
        tensors.insert("dense.weight".to_owned(), tensor(&[1, 3]));
        let weights = Weights { tensors, gguf: None };
        let problems =
            admit("classification", &serde_json::to_vec(&lstm).expect("json"), &weights).expect_err("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("max_length 1000000000"));
    }

    #[test]
    fn gguf_metadata_must_match_its_tensors() {
        use crate::gguf::Meta;
        let u = Meta::Unsigned;
        let file = crate::gguf::tests::file(
            &[
                ("general.architecture", Meta::Text("llama".into())),
                ("llama.block_count", u(4_000_000_000)),
                ("llama.embedding_length", u(8)),
                ("llama.attention.head_count", u(2)),
                ("llama.rope.dimension_count", u(4)),
            ],
            &[("token_embd.weight", &[10, 8]), ("blk.0.attn_q.weight", &[8, 8])],
        );
        let header = gguf::parse(&file, file.len() as u64).expect("a header");
        let weights = Weights { tensors: BTreeMap::new(), gguf: Some((header, file.len() as u64)) };
        let config = br#"{"model_type": "llama"}"#;
        let problems = admit("generation", config, &weights).expect_err("refused");
        assert!(problems.iter().any(|p| p.contains("block_count 4000000000")), "{problems:?}");
    }
}
