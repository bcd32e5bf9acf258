//! Text generation end to end on a tiny Llama the test makes: `/v1/completions` and
//! `/v1/chat/completions`, whole and streamed; seeded sampling is deterministic; greedy
//! generation with the runner's KV cache equals recomputing the whole sequence; stop
//! sequences and max_tokens hold; usage is metered; tokens-per-minute limits hold across two
//! gateways.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, read};
use crate::tiny_llama;

async fn generation_app(database: Database) -> (TestApp, String, std::path::PathBuf) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny-llama");
    tiny_llama::write(&dir);
    app.upload_task_model(&admin, "acme", "llm", "generation", &dir).await;
    (app, admin, dir)
}

/// The data events of a server-sent event stream, parsed, and whether it ended with [DONE].
fn events(body: &str) -> (Vec<Value>, bool) {
    let data: Vec<&str> = body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    let done = data.last() == Some(&"[DONE]");
    (data.iter().filter(|d| **d != "[DONE]").map(|d| serde_json::from_str(d).expect("JSON event")).collect(), done)
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_are_deterministic_stream_stop_and_match_a_reference() {
    let (app, admin, dir) = generation_app(Database::Sqlite).await;
    let key = app.key("acme", "invoker", &admin).await;
    let complete = |body: Value| {
        let (app, key) = (&app, key.clone());
        async move { app.call(Method::POST, "/v1/completions", &key, Some(body)).await }
    };
    let prompt = "the cat sat on the";

    // Greedy with the runner's KV cache = recomputing the whole sequence at every step.
    let (status, greedy) =
        complete(json!({"model": "llm", "prompt": prompt, "max_tokens": 12, "temperature": 0})).await;
    assert_eq!(status, 200, "{greedy}");
    let (reference, generated) = tiny_llama::greedy_without_kv_cache(&dir, prompt, 12);
    assert_eq!(greedy["choices"][0]["text"], reference.as_str(), "{greedy}");
    assert_eq!(greedy["usage"]["completion_tokens"], generated);
    assert_eq!(greedy["usage"]["prompt_tokens"], 5, "five words, five tokens");
    let finish = greedy["choices"][0]["finish_reason"].as_str().expect("finish_reason");
    assert_eq!(finish, if generated == 12 { "length" } else { "stop" });

    // Seeded sampling repeats itself; the stream carries the same text in pieces.
    let sampled =
        json!({"model": "llm", "prompt": prompt, "max_tokens": 10, "temperature": 0.9, "top_p": 0.95, "seed": 42});
    let (_, first) = complete(sampled.clone()).await;
    let (_, second) = complete(sampled.clone()).await;
    assert_eq!(first["choices"][0]["text"], second["choices"][0]["text"], "same seed, same text");
    let mut streamed = sampled.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = app.req(Method::POST, "/v1/completions", Some(&key)).json(&streamed).send().await.expect("sent");
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let (chunks, done) = events(&response.text().await.expect("body"));
    assert!(done, "the stream ends with data: [DONE]");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, first["choices"][0]["text"].as_str().expect("text"), "the pieces add up to the whole");
    let usage = chunks.last().expect("a usage chunk");
    assert_eq!((usage["choices"].clone(), usage["usage"].clone()), (json!([]), first["usage"].clone()));

    // A stop sequence ends the text before it.
    let words: Vec<&str> = reference.split(' ').collect();
    let mut stop_calls = (0, 0);
    if words.len() >= 3 {
        let stop = format!(" {}", words[2]);
        let (_, stopped) =
            complete(json!({"model": "llm", "prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": [stop]}))
                .await;
        let text = stopped["choices"][0]["text"].as_str().expect("text");
        assert_eq!(text, &reference[..reference.find(&stop).expect("stop in reference")], "{stopped}");
        assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
        stop_calls = (1, stopped["usage"]["completion_tokens"].as_i64().expect("tokens"));
    }

    // Chat goes through the template: "<user> hello world <assistant>" is four tokens.
    let chat = json!({"model": "llm", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 5, "temperature": 0});
    let (status, answer) = app.call(Method::POST, "/v1/chat/completions", &key, Some(chat.clone())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(answer["usage"]["prompt_tokens"], 4, "{answer}");
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let response =
        app.req(Method::POST, "/v1/chat/completions", Some(&key)).json(&chat_stream).send().await.expect("sent");
    let (chunks, done) = events(&response.text().await.expect("body"));
    assert!(done);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, answer["choices"][0]["message"]["content"].as_str().expect("content"));

    // Bad requests: clear 4xx.
    for (body, status) in [
        (json!({"model": "llm", "prompt": prompt, "n": 2}), 400),
        (json!({"model": "llm", "prompt": prompt, "temperature": 5}), 400),
        (json!({"model": "llm", "prompt": ""}), 400),
        (json!({"model": "llm", "prompt": prompt, "stop": 7}), 400),
        (json!({"model": "nope", "prompt": prompt}), 404),
        (json!({"model": "llm", "prompt": prompt, "max_tokens": 1000}), 400),
    ] {
        let (got, answer) = complete(body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
    }

    // Usage: every call above, failed ones too, with the tokens the answers reported (the
    // streams repeat the whole answers' tokens).
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let (_, usage) = app.call(Method::GET, "/api/v1/tenants/acme/usage?step=day&group_by=model", &admin, None).await;
    let sum = |model: &str, counter: &str| -> i64 {
        let points = usage["data"].as_array().expect("data").iter().filter(|p| p["model"] == model);
        points.map(|p| p[counter].as_i64().unwrap_or(0)).sum()
    };
    let tokens = |answer: &Value| answer["usage"]["completion_tokens"].as_i64().expect("completion tokens");
    // The four refused before their model was resolved, and the unknown one, count under
    // "(unresolved)": a name that resolved nothing is never a usage key.
    assert_eq!((sum("llm", "requests"), sum("llm", "errors")), (11 + stop_calls.0 - 4, 1), "{usage}");
    assert_eq!((sum("(unresolved)", "requests"), sum("(unresolved)", "errors")), (5, 5), "{usage}");
    assert_eq!(sum("nope", "requests"), 0, "{usage}");
    let answered = tokens(&greedy) + 3 * tokens(&first) + 2 * tokens(&answer) + stop_calls.1;
    assert_eq!(sum("llm", "output_tokens"), answered, "{usage}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_per_minute_limits_hold_across_two_gateways() {
    for database in Database::all("tokens per minute across gateways") {
        let (app, admin, _) = generation_app(database).await;
        let other = app.second_gateway().await;
        let key = app.key("acme", "invoker", &admin).await;
        let limits = json!({"tokens_per_minute": 20});
        assert_eq!(app.call(Method::PUT, "/api/v1/tenants/acme/quotas", &app.admin_key, Some(limits)).await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let into_minute = registry::db::now_ms().rem_euclid(60_000);
        // Under a loaded machine the run takes up to ~20 s: start it early in a minute.
        if into_minute > 30_000 {
            tokio::time::sleep(std::time::Duration::from_millis(u64::try_from(60_500 - into_minute).unwrap_or(0)))
                .await;
        }
        let body = json!({"model": "llm", "prompt": "the cat", "max_tokens": 6, "temperature": 0.8, "seed": 1});
        let (mut generated, mut refusal) = (0, None);
        for i in 0..40 {
            let gateway = if i % 2 == 0 { &app } else { &other };
            let response =
                gateway.req(Method::POST, "/v1/completions", Some(&key)).json(&body).send().await.expect("sent");
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let (status, answer) = read(response).await;
            match status {
                200 => generated += answer["usage"]["completion_tokens"].as_i64().unwrap_or(0),
                429 => {
                    refusal = Some((retry_after, answer));
                    break;
                }
                other => panic!("unexpected {other}: {answer}"),
            }
            // Counts are recorded once a generation ends, off the request path.
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        }
        let (retry_after, answer) = refusal.expect("the limit refuses once the minute's tokens are used");
        assert!(answer.to_string().contains("the tenant's tokens_per_minute limit (20)"), "{answer}");
        assert!((20..20 + 6).contains(&generated), "admitted while under the limit: {generated} tokens");
        let left = u64::try_from(60_000 - registry::db::now_ms().rem_euclid(60_000)).unwrap_or(0).div_ceil(1000);
        assert!(retry_after.expect("Retry-After").abs_diff(left) <= 1);
        other.stop().await;
        app.stop().await;
    }
}

/// How far a GGUF model's logits may stray from the safetensors model's: the root mean
/// square of the difference, as a share of the f32 logits' standard deviation. Unquantized
/// (F32) GGUF shows the layout is exact (measured 2e-7); Q8_0 keeps 8 bits per weight
/// (measured 2.1% on the test's tiny model), Q4_K about 4.5 bits (measured 22%: a 35-word,
/// 256-wide model with uniform weights is a hard case; trained models lose far less).
const F32_TOLERANCE: f32 = 1e-5;
const Q8_0_TOLERANCE: f32 = 0.05;
const Q4_K_TOLERANCE: f32 = 0.35;

/// `rms(quantized - full) / std(full)`.
fn relative_error(full: &[f32], quantized: &[f32]) -> f32 {
    let n = full.len() as f32;
    let mean = full.iter().sum::<f32>() / n;
    let std = (full.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
    let rms = (full.iter().zip(quantized).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / n).sqrt();
    rms / std
}

#[tokio::test(flavor = "multi_thread")]
async fn quantized_gguf_models_stay_close_to_f32_and_generate_through_the_gateway() {
    use candle_core::quantized::GgmlDType;
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let key = app.key("acme", "invoker", &admin).await;
    let prompt = "the cat sat on the mat and then";
    let cases = [
        ("f32", tiny_llama::TINY, GgmlDType::F32, F32_TOLERANCE),
        ("q8", tiny_llama::TINY, GgmlDType::Q8_0, Q8_0_TOLERANCE),
        ("q4k", tiny_llama::WIDE, GgmlDType::Q4K, Q4_K_TOLERANCE),
    ];
    for (name, size, dtype, tolerance) in cases {
        let f32_dir = app.dir.path().join(format!("{name}-f32"));
        tiny_llama::write_sized(&f32_dir, size);
        let dir = app.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("folder");
        tiny_llama::write_gguf(&f32_dir, &dir.join("model.gguf"), dtype);
        for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(f32_dir.join(file), dir.join(file)).expect("copied");
        }
        let (full, quantized) = tiny_llama::logits_f32_and_gguf(&f32_dir, &dir.join("model.gguf"), prompt);
        let error = relative_error(&full, &quantized);
        eprintln!(
            "{name}: logits differ from f32 by {:.1}% (rms of the difference / std of the logits)",
            100.0 * error
        );
        assert!(error <= tolerance, "{name}: logits differ by {error}, over the tolerance {tolerance}");

        app.upload_task_model(&admin, "acme", name, "generation", &dir).await;
        let body = json!({"model": name, "prompt": prompt, "max_tokens": 8, "temperature": 0.7, "seed": 3});
        let (status, first) = app.call(Method::POST, "/v1/completions", &key, Some(body.clone())).await;
        assert_eq!(status, 200, "{name}: {first}");
        let (_, second) = app.call(Method::POST, "/v1/completions", &key, Some(body)).await;
        assert_eq!(first["choices"][0]["text"], second["choices"][0]["text"], "{name}: seeded sampling repeats");
        assert!(first["usage"]["completion_tokens"].as_u64().is_some_and(|n| (1..=8).contains(&n)));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qwen2_model_generates_like_its_reference() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny-qwen2");
    tiny_llama::write_qwen2(&dir);
    app.upload_task_model(&admin, "acme", "qwen", "generation", &dir).await;
    let key = app.key("acme", "invoker", &admin).await;
    let prompt = "the dog ran away and";
    let body = json!({"model": "qwen", "prompt": prompt, "max_tokens": 10, "temperature": 0});
    let (status, answer) = app.call(Method::POST, "/v1/completions", &key, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let reference = tiny_llama::qwen2_greedy_without_kv_cache(&dir, prompt, 10);
    assert_eq!(answer["choices"][0]["text"], reference.as_str(), "the KV-cached generation equals full recomputation");
    // A second call starts from a clean cache.
    let body = json!({"model": "qwen", "prompt": prompt, "max_tokens": 10, "temperature": 0});
    let (_, again) = app.call(Method::POST, "/v1/completions", &key, Some(body)).await;
    assert_eq!(again["choices"][0]["text"], answer["choices"][0]["text"]);

    // The same model as GGUF: unquantized it generates exactly the same; as Q8_0 it generates.
    for (name, dtype) in
        [("qwen-f32", candle_core::quantized::GgmlDType::F32), ("qwen-q8", candle_core::quantized::GgmlDType::Q8_0)]
    {
        let gguf = app.dir.path().join(name);
        std::fs::create_dir_all(&gguf).expect("folder");
        tiny_llama::write_qwen2_gguf(&dir, &gguf.join("model.gguf"), dtype);
        for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(dir.join(file), gguf.join(file)).expect("copied");
        }
        app.upload_task_model(&admin, "acme", name, "generation", &gguf).await;
        let body = json!({"model": name, "prompt": prompt, "max_tokens": 10, "temperature": 0});
        let (status, quantized) = app.call(Method::POST, "/v1/completions", &key, Some(body)).await;
        assert_eq!(status, 200, "{name}: {quantized}");
        if name == "qwen-f32" {
            assert_eq!(quantized["choices"][0]["text"], reference.as_str(), "GGUF Qwen2 reads the same weights");
        }
    }
    app.stop().await;
}
