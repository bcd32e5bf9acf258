//! KServe's Open Inference Protocol (v2): health, metadata, readiness and infer for embedding
//! and classification models, with the protocol's error shape and the error's headers
//! (`Retry-After`).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, embedding, max_abs_diff, read};
use crate::tiny_bert;

fn texts(data: &[&str]) -> Value {
    json!({"id": "r1", "inputs": [{"name": "text", "shape": [data.len()], "datatype": "BYTES", "data": data}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_open_inference_protocol_serves_embeddings_and_classifiers() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let (embedder, classifier) = (app.dir.path().join("e"), app.dir.path().join("c"));
    tiny_bert::write(&embedder);
    tiny_bert::write_classifier(&classifier, &["negative", "positive"]);
    app.upload_model(&admin, "acme", "minilm", &embedder).await;
    app.upload_task_model(&admin, "acme", "sentiment", "classification", &classifier).await;
    let key = app.key("acme", "invoker", &admin).await;

    for path in ["/v2/health/live", "/v2/health/ready", "/v2"] {
        assert_eq!(app.req(Method::GET, path, None).send().await.expect("sent").status(), 200, "{path}");
    }
    let (status, meta) = app.call(Method::GET, "/v2/models/minilm", &key, None).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!((meta["name"].as_str(), meta["versions"].clone()), (Some("minilm"), json!(["1"])));
    assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
    let (status, ready) = app.call(Method::GET, "/v2/models/minilm/versions/1/ready", &key, None).await;
    assert_eq!((status, ready["ready"].as_bool()), (200, Some(true)));

    let inputs = ["hello world", "the cat sat on the mat"];
    let (status, out) = app.call(Method::POST, "/v2/models/minilm/infer", &key, Some(texts(&inputs))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["id"], "r1");
    let output = &out["outputs"][0];
    assert_eq!((output["name"].as_str(), output["datatype"].as_str()), (Some("embedding"), Some("FP32")));
    let width = output["shape"][1].as_u64().expect("width") as usize;
    assert_eq!(output["shape"][0], 2);
    let flat: Vec<f32> =
        output["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("f") as f32).collect();
    let (_, openai) = app.embed(&key, "minilm", json!(inputs)).await;
    for i in 0..2 {
        assert!(max_abs_diff(&flat[i * width..(i + 1) * width], &embedding(&openai, i)) < 1e-6, "row {i}");
    }

    let (status, out) =
        app.call(Method::POST, "/v2/models/sentiment/versions/1/infer", &key, Some(texts(&inputs))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["outputs"][0]["shape"], json!([2, 2]));
    let scores: Vec<f32> =
        out["outputs"][0]["data"].as_array().expect("scores").iter().map(|v| v.as_f64().expect("f") as f32).collect();
    let reference = tiny_bert::reference_scores(&classifier, inputs[0]);
    assert!(max_abs_diff(&scores[..2], &reference) < 1e-5);
    let best = if reference[0] > reference[1] { "negative" } else { "positive" };
    assert_eq!(out["outputs"][1]["data"][0], best);

    // Errors: the protocol's shape, a clear message.
    let mut bad_shape = texts(&inputs);
    bad_shape["inputs"][0]["shape"] = json!([3]);
    let mut not_bytes = texts(&inputs);
    not_bytes["inputs"][0]["datatype"] = json!("FP32");
    for (path, body, status) in [
        ("/v2/models/minilm/infer", bad_shape, 400),
        ("/v2/models/minilm/infer", not_bytes, 400),
        ("/v2/models/nope/infer", texts(&inputs), 404),
        ("/v2/models/minilm/versions/7/infer", texts(&inputs), 404),
    ] {
        let (got, answer) = app.call(Method::POST, path, &key, Some(body)).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{{\"error\": \"…\"}}: {answer}");
    }
    let other = app.tenant("globex").await;
    let (status, answer) = app.call(Method::GET, "/v2/models/minilm", &other, None).await;
    assert_eq!(status, 404, "another tenant's model does not exist for it: {answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generate_extension_answers_whole_and_streamed_like_completions() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let (llm, embedder) = (app.dir.path().join("llm"), app.dir.path().join("e"));
    crate::tiny_llama::write(&llm);
    tiny_bert::write(&embedder);
    app.upload_task_model(&admin, "acme", "llm", "generation", &llm).await;
    app.upload_model(&admin, "acme", "minilm", &embedder).await;
    let key = app.key("acme", "invoker", &admin).await;
    let prompt = "the cat sat on the";
    let (status, completion) = app
        .call(
            Method::POST,
            "/v1/completions",
            &key,
            Some(json!({"model": "llm", "prompt": prompt, "max_tokens": 8, "temperature": 0})),
        )
        .await;
    assert_eq!(status, 200, "{completion}");
    let expected = completion["choices"][0]["text"].as_str().expect("text");

    // Parameters under `parameters` or at the top level, as Triton's clients send them.
    for body in [
        json!({"text_input": prompt, "parameters": {"max_tokens": 8, "temperature": 0}}),
        json!({"text_input": prompt, "max_tokens": 8, "temperature": 0}),
    ] {
        let (status, answer) = app.call(Method::POST, "/v2/models/llm/generate", &key, Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({"model_name": "llm", "model_version": "1", "text_output": expected}));
    }
    let body = json!({"text_input": prompt, "parameters": {"max_tokens": 8, "temperature": 0, "stream": true}});
    let response = app
        .req(Method::POST, "/v2/models/llm/versions/1/generate_stream", Some(&key))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let text = response.text().await.expect("body");
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON event"))
        .collect();
    let streamed: String = events.iter().filter_map(|e| e["text_output"].as_str()).collect();
    assert_eq!(streamed, expected, "the pieces add up to the whole");
    assert!(events.last().is_some_and(|e| e["finish_reason"].is_string()), "the last event says why it ended");
    assert!(events.iter().all(|e| e["model_name"] == "llm" && e["model_version"] == "1"));

    // Bad requests answer 4xx in the protocol's shape.
    for (path, body, status) in [
        ("/v2/models/llm/generate", json!({"parameters": {"max_tokens": 4}}), 400),
        ("/v2/models/llm/generate", json!({"text_input": 7}), 400),
        ("/v2/models/llm/generate", json!({"text_input": prompt, "bogus": 1}), 400),
        ("/v2/models/llm/generate", json!({"text_input": prompt, "parameters": {"temperature": 9}}), 400),
        ("/v2/models/llm/generate", json!({"text_input": prompt, "max_tokens": 100000}), 400),
        ("/v2/models/minilm/generate_stream", json!({"text_input": prompt}), 400),
        ("/v2/models/nope/generate", json!({"text_input": prompt}), 404),
        ("/v2/models/llm/versions/9/generate", json!({"text_input": prompt}), 404),
    ] {
        let (got, answer) = app.call(Method::POST, path, &key, Some(body.clone())).await;
        assert_eq!(got, status, "{path} {body} -> {answer}");
        assert!(answer["error"].is_string(), "{path} {body} -> {answer}");
    }
    app.stop().await;
}

/// A refused infer's status, `Retry-After` and body.
async fn infer_answer(app: &TestApp, key: &str, path: &str, body: &Value) -> (u16, Option<u64>, Value) {
    let response = app.req(Method::POST, path, Some(key)).json(body).send().await.expect("sent");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    let (status, body) = read(response).await;
    (status, retry_after, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn kserve_refusals_by_a_limit_or_a_full_queue_say_when_to_retry() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (admin, _) = app.acme_with_tiny_model().await;
    let key = app.key("acme", "invoker", &admin).await;

    // A full model queue: one request may wait, more are refused at once.
    app.config_mut().runner.queue_depth = 1;
    app.config_mut().runner.max_batch_wait_us = 0;
    app.restart().await;
    assert_eq!(app.call(Method::POST, "/v2/models/tiny/infer", &key, Some(texts(&["warm up"]))).await.0, 200);
    let big: Vec<String> = (0..512).map(|i| format!("a rather longer sentence about the cat number {i}")).collect();
    let big = texts(&big.iter().map(String::as_str).collect::<Vec<_>>());
    let calls = (0..48).map(|_| infer_answer(&app, &key, "/v2/models/tiny/infer", &big));
    let results = futures::future::join_all(calls).await;
    let refused: Vec<_> = results.iter().filter(|(status, _, _)| *status == 429).collect();
    assert!(!refused.is_empty(), "a full queue refuses: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(results.iter().all(|(status, _, _)| *status == 200 || *status == 429), "every other request succeeds");
    for (_, retry_after, body) in refused {
        assert_eq!(*retry_after, Some(1), "a full queue says when to retry: {body}");
        assert!(body["error"].is_string(), "the protocol's shape, {{\"error\": \"…\"}}: {body}");
    }

    // A request limit, refused before the handler runs.
    let limits = json!({"requests_per_minute": 1});
    let (status, body) = app.call(Method::PUT, "/api/v1/tenants/acme/quotas", &app.admin_key, Some(limits)).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the gateway's cache of limits
    // The minute may turn between two calls: at most one call of each minute is admitted.
    let mut refusal = None;
    for _ in 0..3 {
        let (status, retry_after, body) = infer_answer(&app, &key, "/v2/models/tiny/infer", &texts(&["hi"])).await;
        if status == 429 {
            refusal = Some((retry_after, body));
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let (retry_after, body) = refusal.expect("the limit refuses");
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after} s is when the minute ends");
    let message = body["error"].as_str().expect("the protocol's shape, {\"error\": \"…\"}");
    assert!(message.contains("requests_per_minute"), "the message names the limit: {message}");
    app.stop().await;
}
