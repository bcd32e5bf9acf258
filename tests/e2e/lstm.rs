//! The LSTM text classifier of the classic deployment tutorial, end to end: a tiny one made
//! by the test answers the probability a reference computes with the LSTM equations by hand.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp};

const WORDS: &[&str] = &["the", "movie", "was", "great", "terrible", "i", "loved", "hated", "it", "plot", "acting"];
const EMBEDDING: usize = 8;
const HIDDEN: usize = 12;

pub(crate) fn write(dir: &Path) {
    std::fs::create_dir_all(dir).expect("folder");
    let vocab: HashMap<&str, usize> = WORDS.iter().enumerate().map(|(i, w)| (*w, i + 2)).collect();
    let vocab_size = WORDS.len() + 2;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_nn::embedding(vocab_size, EMBEDDING, vb.pp("embedding")).expect("embedding");
    candle_nn::rnn::lstm(EMBEDDING, HIDDEN, candle_nn::rnn::LSTMConfig::default(), vb.pp("lstm")).expect("lstm");
    candle_nn::linear(HIDDEN, 1, vb.pp("dense")).expect("dense");
    varmap.save(dir.join("model.safetensors")).expect("weights");
    let config = json!({
        "model_type": "lstm_classifier", "vocab_size": vocab_size, "embedding_dim": EMBEDDING,
        "hidden_dim": HIDDEN, "max_length": 20, "labels": ["negative", "positive"]
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    std::fs::write(dir.join("vocab.json"), serde_json::to_string(&vocab).expect("json")).expect("vocab");
}

/// The probability of "positive", from the LSTM equations (PyTorch's gate order i, f, g, o).
fn reference(dir: &Path, text: &str) -> f32 {
    let t = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let matrix = |name: &str| t[name].to_vec2::<f32>().expect("matrix");
    let vector = |name: &str| t[name].flatten_all().and_then(|v| v.to_vec1::<f32>()).expect("vector");
    let (embedding, w_ih, w_hh) =
        (matrix("embedding.weight"), matrix("lstm.weight_ih_l0"), matrix("lstm.weight_hh_l0"));
    let (b_ih, b_hh, dense_w, dense_b) =
        (vector("lstm.bias_ih_l0"), vector("lstm.bias_hh_l0"), vector("dense.weight"), vector("dense.bias"));
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    let (mut h, mut c) = (vec![0f32; HIDDEN], vec![0f32; HIDDEN]);
    for word in text.to_lowercase().split(|ch: char| !(ch.is_alphanumeric() || ch == '\'')).filter(|w| !w.is_empty()) {
        let id = WORDS.iter().position(|w| *w == word).map_or(1, |i| i + 2);
        let x = &embedding[id];
        let gate = |row: usize| {
            let dot = |w: &[f32], v: &[f32]| w.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
            dot(&w_ih[row], x) + b_ih[row] + dot(&w_hh[row], &h) + b_hh[row]
        };
        let (mut next_h, mut next_c) = (vec![0f32; HIDDEN], vec![0f32; HIDDEN]);
        for j in 0..HIDDEN {
            let (i, f, g, o) = (
                sigmoid(gate(j)),
                sigmoid(gate(HIDDEN + j)),
                gate(2 * HIDDEN + j).tanh(),
                sigmoid(gate(3 * HIDDEN + j)),
            );
            next_c[j] = f * c[j] + i * g;
            next_h[j] = o * next_c[j].tanh();
        }
        (h, c) = (next_h, next_c);
    }
    sigmoid(dense_w.iter().zip(&h).map(|(a, b)| a * b).sum::<f32>() + dense_b[0])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lstm_classifier_answers_the_reference_probability() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("lstm");
    write(&dir);
    app.upload_task_model(&admin, "acme", "reviews", "classification", &dir).await;
    let key = app.key("acme", "invoker", &admin).await;
    let inputs = ["I loved the movie", "the plot was terrible, I hated it", "an unseen word", ""];
    let (status, answer) =
        app.call(Method::POST, "/v1/classifications", &key, Some(json!({"model": "reviews", "input": inputs}))).await;
    assert_eq!(status, 200, "{answer}");
    for (i, text) in inputs.iter().enumerate() {
        let score = |label: &str| {
            let scores = answer["data"][i]["scores"].as_array().expect("scores");
            scores.iter().find(|s| s["label"] == label).and_then(|s| s["score"].as_f64()).expect("a score") as f32
        };
        let expected = if text.is_empty() { reference(&dir, "unknownword") } else { reference(&dir, text) };
        assert!((score("positive") - expected).abs() < 1e-5, "{text:?}: {} vs reference {expected}", score("positive"));
        assert!((score("negative") - (1.0 - expected)).abs() < 1e-5);
    }
    // A config without its max_length is refused at commit, naming what is missing.
    let broken = app.dir.path().join("broken");
    write(&broken);
    let config = json!({"model_type": "lstm_classifier", "vocab_size": 13, "embedding_dim": 8, "hidden_dim": 12});
    std::fs::write(broken.join("config.json"), config.to_string()).expect("config");
    let body = json!({"name": "broken", "task": "classification"});
    assert_eq!(app.call(Method::POST, "/api/v1/tenants/acme/models", &admin, Some(body)).await.0, 201);
    let version = app.new_version(&admin, "acme", "broken").await;
    for (relative, local) in crate::helpers::files_of(&broken) {
        let bytes = std::fs::read(&local).expect("file");
        assert_eq!(app.put_file(&admin, "acme", "broken", version, &relative, bytes, true).await.0, 201);
    }
    let (status, body) = app.commit(&admin, "acme", "broken", version).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("max_length"), "the missing field is named: {body}");
    app.stop().await;
}
