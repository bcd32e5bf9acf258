//! The real all-MiniLM-L6-v2, uploaded and called end to end, against sentence-transformers' output.

use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, cosine, embedding, max_abs_diff};

fn fixtures() -> Value {
    let path = std::env::var("MODELGATE_TEST_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"))
        .join("minilm-reference.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
        .expect("fixture JSON")
}

async fn minilm_on(database: Database, model_dir: &std::path::Path) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let acme = app.tenant("acme").await;
    let globex = app.tenant("globex").await;
    app.upload_model(&acme, "acme", "minilm", model_dir).await;
    app.set_alias(&acme, "acme", "minilm", "production", 1).await;

    let reference = fixtures();
    let items = reference["items"].as_array().expect("items");
    let inputs: Vec<&str> = items.iter().map(|i| i["input"].as_str().expect("input")).collect();
    let invoker = app.key("acme", "invoker", &acme).await;
    let (status, body) = app.embed(&invoker, "minilm:production", json!(inputs)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > inputs.len() as u64);
    let (mut worst_cos, mut worst_diff) = (1.0f32, 0.0f32);
    for (i, item) in items.iter().enumerate() {
        let want: Vec<f32> = item["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let got = embedding(&body, i);
        assert_eq!(got.len(), 384);
        let (cos, diff) = (cosine(&got, &want), max_abs_diff(&got, &want));
        assert!(cos >= 0.9999 && diff <= 1e-4, "input {i} {:?}: cosine {cos}, max abs diff {diff}", inputs[i]);
        (worst_cos, worst_diff) = (worst_cos.min(cos), worst_diff.max(diff));
        // One at a time (no padding) gives the same vector.
        if i == 0 {
            let (_, single) = app.embed(&invoker, "minilm", json!(inputs[0])).await;
            assert!(max_abs_diff(&embedding(&single, 0), &want) <= 1e-4);
        }
    }
    eprintln!(
        "MiniLM vs sentence-transformers over {} inputs: worst cosine {worst_cos}, worst max abs diff {worst_diff:e}",
        items.len()
    );
    let (status, _) = app.embed(&globex, "minilm:production", json!("hello")).await;
    assert_eq!(status, 404, "globex cannot call acme's MiniLM");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn minilm_embeddings_match_sentence_transformers() {
    let Some(dir) = crate::helpers::service_var("MODELGATE_TEST_MINILM_DIR", "MiniLM end to end") else {
        return;
    };
    for database in Database::all("MiniLM end to end") {
        minilm_on(database, std::path::Path::new(&dir)).await;
    }
}
