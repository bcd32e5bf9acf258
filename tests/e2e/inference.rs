//! The inference path's behaviour beyond one request: shared cold loads, output encodings.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, embedding};

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_requests_share_one_load() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let mut runner = app.runner_client().await;
    let before = runner.status(proto::v1::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!((before.loads_total, before.loaded.len()), (0, 0), "nothing is loaded before the first call");

    let calls = (0..50).map(|i| app.embed(&key, "tiny", json!(format!("the cat sat on the mat {i}"))));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let after = runner.status(proto::v1::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!(after.loads_total, 1, "fifty concurrent first requests caused one load");
    assert_eq!(after.loaded.len(), 1);
    assert!(after.loaded[0].memory_bytes > 0 && after.memory_used_bytes == after.loaded[0].memory_bytes);
    assert_eq!(after.loaded[0].display_name, "acme/tiny@1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn base64_encoding_carries_the_same_floats() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
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

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_share_batches_and_a_full_queue_answers_429_at_once() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let inputs: Vec<String> =
        (0..64).map(|i| format!("the cat {} on the mat {i}", ["sat", "ate", "ran"][i % 3])).collect();
    let mut singles = Vec::new();
    for input in &inputs {
        let (status, body) = app.embed(&key, "tiny", json!(input)).await;
        assert_eq!(status, 200, "{body}");
        singles.push(embedding(&body, 0));
    }

    // Requests that arrive while a batch forms join it.
    app.config_mut().runner.max_batch_wait_us = 5_000;
    app.restart().await;
    let calls = inputs.iter().map(|input| app.embed(&key, "tiny", json!(input)));
    let answers = futures::future::join_all(calls).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        let diff = crate::helpers::max_abs_diff(&embedding(body, 0), &singles[i]);
        assert!(diff < 1e-5, "request {i} got its own answer (max diff {diff} from running alone)");
    }
    let mut runner = app.runner_client().await;
    let status = runner.status(proto::v1::StatusRequest {}).await.expect("status").into_inner();
    let model = &status.loaded[0];
    assert_eq!(model.requests_total, 64);
    assert!(model.batches_total < 64, "64 concurrent requests ran in {} forward passes", model.batches_total);
    assert!(status.cache_hits + status.cache_misses >= 64 && status.cache_misses >= 1);

    // One request may wait; more are refused at once with 429 and Retry-After.
    app.config_mut().runner.queue_depth = 1;
    app.config_mut().runner.max_batch_wait_us = 0;
    app.restart().await;
    assert_eq!(app.embed(&key, "tiny", json!("warm up")).await.0, 200);
    let big: Vec<String> = (0..512).map(|i| format!("a rather longer sentence about the cat number {i}")).collect();
    let calls = (0..48).map(|_| {
        let (app, key, big) = (&app, &key, big.clone());
        async move {
            let started = std::time::Instant::now();
            let response = app
                .req(reqwest::Method::POST, "/v1/embeddings", Some(key))
                .json(&json!({"model": "tiny", "input": big}))
                .send()
                .await
                .expect("sent");
            let retry_after = response.headers().get("retry-after").is_some();
            (response.status().as_u16(), retry_after, started.elapsed())
        }
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<_> = results.iter().filter(|(status, _, _)| *status == 429).collect();
    assert!(!refused.is_empty(), "a full queue refuses: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(results.iter().all(|(status, _, _)| *status == 200 || *status == 429), "every other request succeeds");
    assert!(refused.iter().all(|(_, retry_after, _)| *retry_after), "each refusal says when to retry");
    let slowest_ok = results.iter().filter(|r| r.0 == 200).map(|r| r.2).max().expect("some succeed");
    let fastest_refusal = refused.iter().map(|r| r.2).min().expect("refusals");
    assert!(fastest_refusal < slowest_ok, "a refusal does not wait for the queue");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dimensions_shortens_embeddings_to_unit_length() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let (_, full) = app.embed(&key, "tiny", json!("hello world")).await;
    let full = embedding(&full, 0);
    let body = json!({"model": "tiny", "input": "hello world", "dimensions": 8});
    let (status, short) = app.call(reqwest::Method::POST, "/v1/embeddings", &key, Some(body)).await;
    assert_eq!(status, 200, "{short}");
    let short = embedding(&short, 0);
    assert_eq!(short.len(), 8);
    let norm = full[..8].iter().map(|v| v * v).sum::<f32>().sqrt();
    let expected: Vec<f32> = full[..8].iter().map(|v| v / norm).collect();
    assert!(crate::helpers::max_abs_diff(&short, &expected) < 1e-6, "the first 8 values, at unit length");
    let body = json!({"model": "tiny", "input": "hello", "dimensions": full.len() + 1});
    assert_eq!(app.call(reqwest::Method::POST, "/v1/embeddings", &key, Some(body)).await.0, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_holds_no_more_tokens_than_its_limit() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    // Each request counts 8 tokens ([CLS], six words, [SEP]); a limit of 12 fits one per batch.
    let (status, body) = app.embed(&key, "tiny", json!("the cat sat on the mat")).await;
    assert_eq!((status, body["usage"]["prompt_tokens"].as_u64()), (200, Some(8)), "{body}");
    app.config_mut().runner.max_batch_wait_us = 20_000;
    app.config_mut().runner.max_batch_tokens = 12;
    app.restart().await;
    assert!(sixteen_requests(&app, &key).await.iter().all(|(status, _)| *status == 200));
    assert_eq!(requests_and_batches(&app).await, (16, 16), "no two 8-token requests share a 12-token batch");

    app.config_mut().runner.max_batch_tokens = 64;
    app.restart().await;
    assert!(sixteen_requests(&app, &key).await.iter().all(|(status, _)| *status == 200));
    let (requests, batches) = requests_and_batches(&app).await;
    assert_eq!(requests, 16);
    assert!((2..16).contains(&batches), "8 requests of 8 tokens fill a 64-token batch: {batches} batches");
    app.stop().await;
}

async fn sixteen_requests(app: &TestApp, key: &str) -> Vec<(u16, serde_json::Value)> {
    let calls = (0..16).map(|i| app.embed(key, "tiny", json!(format!("the cat {i} on the mat"))));
    futures::future::join_all(calls).await
}

async fn requests_and_batches(app: &TestApp) -> (u64, u64) {
    let mut runner = app.runner_client().await;
    let status = runner.status(proto::v1::StatusRequest {}).await.expect("status").into_inner();
    (status.loaded[0].requests_total, status.loaded[0].batches_total)
}
