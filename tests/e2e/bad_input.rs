//! Bad input gets a clear 4xx and leaves nothing usable behind.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, read};
use crate::tiny_bert;

struct Fixture {
    app: TestApp,
    key: String,
    files: Vec<(String, Vec<u8>)>,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    let files =
        crate::helpers::files_of(&dir).into_iter().map(|(p, local)| (p, std::fs::read(local).expect("read"))).collect();
    let (status, _) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &key, Some(json!({"name": "tiny", "task": "embedding"})))
        .await;
    assert_eq!(status, 201);
    Fixture { app, key, files }
}

impl Fixture {
    /// Uploads the tiny model's files with `change` applied, then commits; returns the version and the commit's answer.
    async fn attempt(&self, change: impl Fn(&mut Vec<(String, Vec<u8>)>)) -> (i64, u16, Value) {
        let mut files = self.files.clone();
        change(&mut files);
        let version = self.app.new_version(&self.key, "acme", "tiny").await;
        for (path, bytes) in files {
            let (status, body) = self.app.put_file(&self.key, "acme", "tiny", version, &path, bytes, true).await;
            assert_eq!(status, 201, "{path}: {body}");
        }
        let (status, body) = self.app.commit(&self.key, "acme", "tiny", version).await;
        (version, status, body)
    }

    /// The version is not callable and still a draft.
    async fn assert_unusable(&self, version: i64) {
        let (status, body) = self.app.embed(&self.key, &format!("tiny@{version}"), json!("hello")).await;
        assert_eq!(status, 404, "an uncommitted version is not callable: {body}");
        let (_, body) = self
            .app
            .call(Method::GET, &format!("/api/v1/tenants/acme/models/tiny/versions/{version}"), &self.key, None)
            .await;
        assert_eq!(body["status"], "draft");
    }
}

fn replace(files: &mut [(String, Vec<u8>)], path: &str, bytes: Vec<u8>) {
    files.iter_mut().find(|(p, _)| p == path).expect("file present").1 = bytes;
}

/// The listed problems, one `file: message` a line.
fn problems(body: &Value) -> String {
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    let list = body["error"]["details"]["problems"].as_array().expect("a problem list");
    list.iter()
        .map(|p| format!("{}: {}", p["file"].as_str().unwrap_or("-"), p["message"].as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends a PUT with `target` exactly as written: HTTP clients normalise `..` and `%2E`
/// segments away, and the point is to see what the server does with them.
fn raw_put(base: &str, target: &str, key: &str) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    let request = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = answer.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_versions_are_refused_with_every_reason() {
    let f = fixture().await;

    let (v, status, body) = f
        .attempt(|files| {
            let weights = &mut files.iter_mut().find(|(p, _)| p == "model.safetensors").expect("weights").1;
            let keep = weights.len() - 100;
            weights.truncate(keep);
        })
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(problems(&body).contains("model.safetensors"), "{body}");
    assert!(problems(&body).contains("outside"), "truncated data is reported: {body}");
    f.assert_unusable(v).await;

    let (v, status, body) =
        f.attempt(|files| replace(files, "model.safetensors", [u64::MAX / 2].map(u64::to_le_bytes).concat())).await;
    assert_eq!(status, 422);
    assert!(problems(&body).contains("header length"), "{body}");
    f.assert_unusable(v).await;

    let (v, status, body) = f
        .attempt(|files| {
            let mut bytes = 1_000u64.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            replace(files, "model.safetensors", bytes);
        })
        .await;
    assert_eq!(status, 422);
    assert!(problems(&body).contains("runs past the end"), "{body}");
    f.assert_unusable(v).await;

    // Several problems at once are all reported.
    let (v, status, body) = f
        .attempt(|files| {
            files.retain(|(p, _)| p != "config.json" && p != "tokenizer.json");
        })
        .await;
    assert_eq!(status, 422);
    let listed = problems(&body);
    assert!(listed.contains("config.json is missing") && listed.contains("tokenizer.json is missing"), "{body}");
    f.assert_unusable(v).await;

    let (v, status, body) =
        f.attempt(|files| replace(files, "config.json", br#"{"model_type":"llama","hidden_size":8}"#.to_vec())).await;
    assert_eq!(status, 422);
    assert!(problems(&body).contains("\"llama\" is not supported"), "{body}");
    f.assert_unusable(v).await;

    // A good commit after all that works, and is then immutable.
    let (v, status, body) = f.attempt(|_| {}).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = f.app.put_file(&f.key, "acme", "tiny", v, "extra.txt", b"late".to_vec(), false).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, _) = f.app.commit(&f.key, "acme", "tiny", v).await;
    assert_eq!(status, 409, "a committed version cannot be committed again");
    f.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_with_bad_digests_or_paths_record_nothing() {
    let f = fixture().await;
    let version = f.app.new_version(&f.key, "acme", "tiny").await;
    let base = format!("/api/v1/tenants/acme/models/tiny/versions/{version}/files");

    let wrong = "0".repeat(64);
    let response = f
        .app
        .req(Method::PUT, &format!("{base}/config.json"), Some(&f.key))
        .header("x-checksum-sha256", &wrong)
        .body("{}")
        .send()
        .await
        .expect("sent");
    let (status, body) = read(response).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("digest_mismatch")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains(&wrong));
    let (status, body) = f.app.put_file(&f.key, "acme", "tiny", version, "x.bin", b"x".to_vec(), false).await;
    assert_eq!(status, 201, "{body}");
    let response = f
        .app
        .req(Method::PUT, &format!("{base}/y.bin"), Some(&f.key))
        .header("x-checksum-sha256", "not-a-digest")
        .body("y")
        .send()
        .await;
    assert_eq!(read(response.expect("sent")).await.0, 400);

    for bad in [
        "../escape",
        "%2E%2E/escape",
        "a/../../escape",
        "/etc/passwd",
        "%2Fetc/passwd",
        "a%5Cb",
        "a\\b",
        "a//b",
        "./a",
        "%2E/a",
    ] {
        let (base_url, key) = (f.app.base.clone(), f.key.clone());
        let target = format!("{base}/{bad}");
        let (status, body) =
            tokio::task::spawn_blocking(move || raw_put(&base_url, &target, &key)).await.expect("raw request");
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("file path"), "{bad}: {body}");
    }
    let (_, body) =
        f.app.call(Method::GET, &format!("/api/v1/tenants/acme/models/tiny/versions/{version}"), &f.key, None).await;
    let paths: Vec<&str> = body["files"].as_array().expect("files").iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths, ["x.bin"], "only the good upload is recorded: {body}");
    f.app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inference_requests_get_clear_4xx() {
    let f = fixture().await;
    let (v, status, _) = f.attempt(|_| {}).await;
    assert_eq!(status, 200);
    f.app.set_alias(&f.key, "acme", "tiny", "production", v).await;

    for (model, code) in [
        ("nosuch", "model_not_found"),
        ("tiny:staging", "model_not_found"),
        ("tiny@99", "model_not_found"),
        ("bad name!", "model_not_found"),
    ] {
        let (status, body) = f.app.embed(&f.key, model, json!("hello")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some(code)), "{model}: {body}");
    }
    let raw = f
        .app
        .req(Method::POST, "/v1/embeddings", Some(&f.key))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await;
    let (status, body) = read(raw.expect("sent")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")), "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    for (input, fragment) in [
        (json!(42), "string or an array"),
        (json!([]), "empty array"),
        (json!([1, 2]), "token arrays"),
        (json!(["ok", 3]), "input[1]"),
    ] {
        let (status, body) = f.app.embed(&f.key, "tiny", input.clone()).await;
        assert_eq!(status, 400, "{input}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains(fragment), "{input}: {body}");
    }
    // Streaming from a model that cannot generate: 400 in OpenAI's shape, before any stream.
    let chat = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let (status, body) = f.app.call(Method::POST, "/v1/chat/completions", &f.key, Some(chat)).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("embedding model"), "{body}");
    let (status, body) = f.app.call(Method::POST, "/v1/embeddings", &f.key, Some(json!({ "input": "hi" }))).await;
    assert_eq!(status, 400, "a missing model is named: {body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("model"));
    let (status, body) = f
        .app
        .call(Method::POST, "/api/v1/tenants/acme/models", &f.key, Some(json!({ "name": "x", "task": "dancing" })))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = f.app.call(Method::GET, "/api/v1/nothing-here", &f.key, None).await;
    assert_eq!(status, 404);
    f.app.stop().await;
}

/// Found by schemathesis: an expiry past what RFC 3339 can write was stored, and from then on
/// listing the tenant's keys failed with a 500.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_expiry_past_the_year_9999_is_refused_and_keys_still_list() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let path = "/api/v1/tenants/acme/keys";
    for expires_in in [json!(9_223_372_036_854_775_807_u64), json!(u64::MAX)] {
        let body = json!({"name": "forever", "role": "viewer", "expires_in": expires_in});
        let (status, answer) = app.call(Method::POST, path, &admin, Some(body)).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_request")), "{answer}");
    }
    let (status, keys) = app.call(Method::GET, path, &admin, None).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["data"].as_array().map(Vec::len), Some(1), "only the admin key: {keys}");
    app.stop().await;
}
