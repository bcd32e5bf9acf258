//! The inference path's behaviour beyond one request: shared cold loads, output encodings.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, embedding};
use crate::tiny_bert;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_share_one_load() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    app.upload_model(&key, "acme", "tiny", &dir).await;
    let mut runner = app.runner_client().await;
    let before = runner.status(proto::v1::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!((before.loads_total, before.loaded.len()), (0, 0), "nothing is loaded before the first call");

    let calls = (0..8).map(|i| app.embed(&key, "tiny", json!(format!("the cat sat on the mat {i}"))));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let after = runner.status(proto::v1::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!(after.loads_total, 1, "eight concurrent first requests caused one load");
    assert_eq!(after.loaded.len(), 1);
    assert!(after.loaded[0].memory_bytes > 0 && after.memory_used_bytes == after.loaded[0].memory_bytes);
    assert_eq!(after.loaded[0].display_name, "acme/tiny@1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn base64_encoding_carries_the_same_floats() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    app.upload_model(&key, "acme", "tiny", &dir).await;
    let (status, floats) = app.embed(&key, "tiny", json!(["hello world", "a dog"])).await;
    assert_eq!(status, 200);
    let request = json!({ "model": "tiny", "input": ["hello world", "a dog"], "encoding_format": "base64" });
    let (status, encoded) = app.call(reqwest::Method::POST, "/v1/embeddings", &key, Some(request)).await;
    assert_eq!(status, 200, "{encoded}");
    for i in 0..2 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded["data"][i]["embedding"].as_str().expect("a base64 string"))
            .expect("valid base64");
        let decoded: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
        assert_eq!(decoded, embedding(&floats, i), "input {i}: base64 is the little-endian f32 of the float answer");
    }
    assert_eq!(encoded["usage"], floats["usage"]);
    assert_eq!(floats["usage"]["prompt_tokens"], 4 + 4, "[CLS] and [SEP] around two words, twice");
    app.stop().await;
}
