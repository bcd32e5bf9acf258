//! A tiny BERT made by the test itself with candle (random weights, a WordPiece
//! tokenizer over a small vocabulary), laid out like a sentence-transformers folder,
//! and an independent reference embedding computed directly with candle.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::{Value, json};

const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const WORDS: &[&str] = &[
    "the", "a", "man", "woman", "is", "eating", "food", "cat", "dog", "sat", "on", "mat", "hello", "world", "playing",
    "guitar", "riding", "horse", "child", "piece", "of", "bread", "monkey", "drum", ".", ",", "##s", "##ing", "##ed",
];

fn config_json() -> Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": SPECIAL.len() + WORDS.len(),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    })
}

fn tokenizer_json() -> Value {
    let (vocab, added) = vocabulary(&SPECIAL, WORDS);
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// A tokenizer's vocabulary (special tokens first, then words, numbered in order) and its
/// special tokens as `added_tokens`.
pub fn vocabulary(special: &[&str], words: &[&str]) -> (serde_json::Map<String, Value>, Vec<Value>) {
    let vocab = special.iter().chain(words).enumerate().map(|(i, w)| ((*w).to_owned(), json!(i))).collect();
    let added = special
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    (vocab, added)
}

/// Writes the tiny model into `dir` (config, weights, tokenizer, sentence-transformers files).
pub fn write(dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("model folder");
    let config_value = config_json();
    let config: Config = serde_json::from_value(config_value.clone()).expect("a valid BERT config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb, &config).expect("random weights for every tensor");
    varmap.save(dir.join("model.safetensors")).expect("saving the weights");
    let write_json = |name: &str, v: Value| {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&v).expect("json")).expect("writing")
    };
    write_json("config.json", config_value);
    write_json("tokenizer.json", tokenizer_json());
    write_json(
        "modules.json",
        json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    );
    write_json(
        "1_Pooling/config.json",
        json!({"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}),
    );
}

/// The reference: one sentence at a time (no padding), mean pooling, L2 normalisation.
pub fn reference_embedding(dir: &Path, text: &str) -> Vec<f32> {
    let config: Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("config parses");
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights load");
    let model =
        BertModel::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), &config).expect("model loads");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer loads");
    let ids = tokenizer.encode(text, true).expect("tokenizes").get_ids().to_vec();
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).expect("ids");
    let hidden = model.forward(&ids, &ids.zeros_like().expect("zeros"), None).expect("forward");
    let mean = hidden.mean(1).expect("mean").squeeze(0).expect("squeeze");
    let v: Vec<f32> = mean.to_vec1().expect("vector");
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// Writes a tiny sequence classifier (`BertForSequenceClassification`: encoder, pooler and
/// classifier under their Hugging Face names) with the given labels into `dir`.
pub fn write_classifier(dir: &Path, labels: &[&str]) {
    std::fs::create_dir_all(dir).expect("model folder");
    let mut config_value = config_json();
    config_value["architectures"] = json!(["BertForSequenceClassification"]);
    let id2label: serde_json::Map<String, Value> =
        labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    config_value["id2label"] = Value::Object(id2label);
    let config: Config = serde_json::from_value(config_value.clone()).expect("a valid BERT config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BertModel::load(vb.pp("bert"), &config).expect("random encoder weights");
    candle_nn::linear(32, 32, vb.pp("bert.pooler.dense")).expect("pooler");
    candle_nn::linear(32, labels.len(), vb.pp("classifier")).expect("classifier");
    varmap.save(dir.join("model.safetensors")).expect("saving the weights");
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config_value).expect("json")).expect("config");
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec_pretty(&tokenizer_json()).expect("json"))
        .expect("tokenizer");
}

/// The reference label scores: one sentence at a time, [CLS] through pooler (tanh) and
/// classifier, softmax.
pub fn reference_scores(dir: &Path, text: &str) -> Vec<f32> {
    use candle_nn::Module as _;
    let config: Config =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("config parses");
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights load");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = BertModel::load(vb.pp("bert"), &config).expect("encoder");
    let labels = config_labels(dir);
    let pooler = candle_nn::linear(32, 32, vb.pp("bert.pooler.dense")).expect("pooler");
    let classifier = candle_nn::linear(32, labels, vb.pp("classifier")).expect("classifier");
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer loads");
    let ids = tokenizer.encode(text, true).expect("tokenizes").get_ids().to_vec();
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (1, n), &Device::Cpu).expect("ids");
    let hidden = model.forward(&ids, &ids.zeros_like().expect("zeros"), None).expect("forward");
    let cls = hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)).expect("cls");
    let logits = classifier.forward(&pooler.forward(&cls).and_then(|t| t.tanh()).expect("pooled")).expect("logits");
    let scores = candle_nn::ops::softmax(&logits, 1).expect("softmax");
    scores.squeeze(0).and_then(|t| t.to_vec1()).expect("scores")
}

fn config_labels(dir: &Path) -> usize {
    let config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config")).expect("json");
    config["id2label"].as_object().map_or(0, serde_json::Map::len)
}
