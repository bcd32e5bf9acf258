//! Sequence classification end to end: a tiny BERT classifier the test makes answers every
//! label's score, matching a reference computed directly with candle.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, max_abs_diff};
use crate::tiny_bert;

#[tokio::test(flavor = "multi_thread")]
async fn a_classifier_scores_every_label_like_the_reference() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("sentiment");
    let labels = ["negative", "neutral", "positive"];
    tiny_bert::write_classifier(&dir, &labels);
    app.upload_task_model(&admin, "acme", "sentiment", "classification", &dir).await;
    let key = app.key("acme", "invoker", &admin).await;

    let inputs = ["the cat sat on the mat", "hello world", "a man is eating food"];
    let (status, answer) =
        app.call(Method::POST, "/v1/classifications", &key, Some(json!({"model": "sentiment", "input": inputs}))).await;
    assert_eq!(status, 200, "{answer}");
    for (i, text) in inputs.iter().enumerate() {
        let result = &answer["data"][i];
        let reference = tiny_bert::reference_scores(&dir, text);
        let got: Vec<f32> = labels
            .iter()
            .map(|l| {
                let scores = result["scores"].as_array().expect("scores");
                let entry = scores.iter().find(|s| s["label"] == *l).expect("every label is scored");
                entry["score"].as_f64().expect("score") as f32
            })
            .collect();
        assert!(max_abs_diff(&got, &reference) < 1e-5, "{text}: {got:?} vs reference {reference:?}");
        let best = reference.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| labels[i]);
        assert_eq!(result["label"].as_str(), best, "the label is the best-scored one");
        assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-5, "softmax scores sum to 1");
    }
    assert!(answer["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0));
    let (status, _) =
        app.call(Method::POST, "/v1/embeddings", &key, Some(json!({"model": "sentiment", "input": "x"}))).await;
    assert_eq!(status, 400, "a classifier does not embed");
    app.stop().await;
}
