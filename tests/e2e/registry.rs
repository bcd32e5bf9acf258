//! Versions and aliases in depth: weighted aliases, history, archiving, deleting, dedup.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, files_of, read};

fn blob_count(app: &TestApp) -> usize {
    let tenants = app.dir.path().join("blobs/tenants");
    std::fs::read_dir(&tenants)
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|t| std::fs::read_dir(t.path().join("blobs/sha256")).map(Iterator::count).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

async fn registry_on(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let (key, dir) = app.acme_with_tiny_model().await;
    let stored = blob_count(&app);
    assert_eq!(stored, files_of(&dir).len());

    // Version 2: the same bytes again are stored once.
    app.upload_version_again(&key, "tiny", &dir).await;
    assert_eq!(blob_count(&app), stored, "a second upload of the same bytes stores nothing new");
    let v3 = app.new_version(&key, "acme", "tiny").await;

    let alias = "/api/v1/tenants/acme/models/tiny/aliases/production";
    app.set_alias(&key, "acme", "tiny", "production", 1).await;
    for (body, status, fragment) in [
        (json!({"targets": [{"version": 1, "weight": 90}, {"version": 2, "weight": 20}]}), 400, "sum to 110"),
        (json!({"targets": [{"version": 1, "weight": 50}, {"version": 1, "weight": 50}]}), 400, "once"),
        (json!({"version": v3}), 409, "not ready"),
        (json!({"version": 1, "targets": []}), 400, "either"),
        (json!({"version": 99}), 404, "not found"),
    ] {
        let (got, answer) = app.call(Method::PUT, alias, &key, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or_default().contains(fragment), "{body}: {answer}");
    }
    let split = json!({"targets": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]});
    let (status, body) = app.call(Method::PUT, alias, &key, Some(split)).await;
    assert_eq!(status, 200, "{body}");
    let mut served = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let response = app
            .req(Method::POST, "/v1/embeddings", Some(&key))
            .json(&json!({"model": "tiny:production", "input": "a dog"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 200);
        let version = response.headers().get("x-modelgate-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        *served.entry(version.expect("the answering version is named")).or_insert(0) += 1;
    }
    assert_eq!(
        served.keys().cloned().collect::<Vec<_>>(),
        ["acme/tiny@1", "acme/tiny@2"],
        "a 50/50 split serves both: {served:?}"
    );

    // Archiving: refused while an alias points at the version; then not callable.
    let archive = |n: i64| format!("/api/v1/tenants/acme/models/tiny/versions/{n}/archive");
    let (status, body) = app.call(Method::POST, &archive(2), &key, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("production"), "{body}");
    app.set_alias(&key, "acme", "tiny", "production", 1).await;
    let (status, body) = app.call(Method::POST, &archive(2), &key, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("archived")), "{body}");
    assert_eq!(app.embed(&key, "tiny@2", json!("a dog")).await.0, 404, "an archived version is not callable");
    let (status, _) = app.call(Method::PUT, alias, &key, Some(json!({"version": 2}))).await;
    assert_eq!(status, 409, "no alias may point at an archived version");

    // History: every move, newest first.
    let (status, history) = app.call(Method::GET, &format!("{alias}/history"), &key, None).await;
    assert_eq!(status, 200);
    let moves = history["data"].as_array().expect("moves");
    assert_eq!(moves.len(), 3, "{history}");
    assert_eq!(moves[0]["to"], json!([{"version": 1, "weight": 100}]));
    assert_eq!(moves[0]["from"], json!([{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]));
    assert_eq!(moves[2]["from"], json!(null), "the first move created the alias");
    assert!(moves.iter().all(|m| m["moved_by"].is_string() && m["moved_at"].is_string()));

    // Deleting: refused while an alias exists; afterwards the name is free again.
    let model = "/api/v1/tenants/acme/models/tiny";
    let (status, body) = app.call(Method::DELETE, model, &key, None).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("production"));
    assert_eq!(app.call(Method::DELETE, alias, &key, None).await.0, 204);
    assert_eq!(app.call(Method::DELETE, model, &key, None).await.0, 204);
    assert_eq!(app.call(Method::GET, model, &key, None).await.0, 404);
    assert_eq!(app.embed(&key, "tiny@1", json!("a dog")).await.0, 404);
    let (status, _) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &key, Some(json!({"name": "tiny", "task": "embedding"})))
        .await;
    assert_eq!(status, 201, "a deleted model's name can be used again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_split_move_with_history_and_guard_archive_and_delete() {
    for database in Database::all("registry") {
        registry_on(database).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_over_the_storage_quota_are_refused_and_store_nothing() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let quota = "/api/v1/tenants/acme/quotas";
    let (status, _) = app.call(Method::PUT, quota, &key, Some(json!({"storage_bytes": 1_000_000}))).await;
    assert_eq!(status, 403, "only a platform admin sets quotas");
    let (status, body) = app.call(Method::PUT, quota, &app.admin_key, Some(json!({"storage_bytes": 1_000_000}))).await;
    assert_eq!(status, 200, "{body}");
    let (_, model) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &key, Some(json!({"name": "m", "task": "embedding"})))
        .await;
    assert_eq!(model["name"], "m");
    let version = app.new_version(&key, "acme", "m").await;

    let small = vec![1u8; 600_000];
    assert_eq!(app.put_file(&key, "acme", "m", version, "a.bin", small.clone(), true).await.0, 201);
    let stored = blob_count(&app);
    // Refused up front by Content-Length, and while streaming when the length is not sent.
    let (status, body) = app.put_file(&key, "acme", "m", version, "b.bin", vec![2u8; 600_000], false).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("storage_quota_exceeded")), "{body}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..6).map(|i| Ok(vec![3u8 + i; 100_000])).collect();
    let response = app
        .req(Method::PUT, &format!("/api/v1/tenants/acme/models/m/versions/{version}/files/c.bin"), Some(&key))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 413, "a streamed body past the quota is cut off");
    assert_eq!(blob_count(&app), stored, "refused uploads store nothing");
    // Known bytes cost nothing, even at a full quota.
    assert_eq!(app.put_file(&key, "acme", "m", version, "copy.bin", small, true).await.0, 201);
    let (_, usage) = app.call(Method::GET, quota, &key, None).await;
    assert_eq!(
        (usage["used_bytes"].as_i64(), usage["quota_bytes"].as_i64()),
        (Some(600_000), Some(1_000_000)),
        "{usage}"
    );
    let (_, version) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/m/versions/{version}"), &key, None).await;
    let files: Vec<&str> =
        version["files"].as_array().expect("files").iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(files, ["a.bin", "copy.bin"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_record_description_tags_and_lineage() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let (status, _) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &key, Some(json!({"name": "tiny-q8", "task": "embedding"})))
        .await;
    assert_eq!(status, 201);
    let versions = "/api/v1/tenants/acme/models/tiny-q8/versions";
    let body = json!({"description": "int8 copy", "tags": ["q8", "cpu"], "derived_from": "tiny@1"});
    let (status, version) = app.call(Method::POST, versions, &key, Some(body)).await;
    assert_eq!(status, 201, "{version}");
    assert_eq!((version["description"].clone(), version["tags"].clone()), (json!("int8 copy"), json!(["cpu", "q8"])));
    assert_eq!(version["derived_from"], "tiny@1");
    let (_, listed) = app.call(Method::GET, versions, &key, None).await;
    assert_eq!(listed["data"][0]["derived_from"], "tiny@1", "lineage is stored: {listed}");
    let draft = app.new_version(&key, "acme", "tiny").await;
    for bad in ["tiny@99", "tiny", "nosuch@1", &format!("tiny@{draft}")] {
        let (status, body) = app.call(Method::POST, versions, &key, Some(json!({"derived_from": bad}))).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let raw = app
        .req(Method::POST, versions, Some(&key))
        .header("content-type", "application/json")
        .body("{\"tags\": [")
        .send()
        .await;
    let (status, body) = read(raw.expect("sent")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")), "{body}");
    app.stop().await;
}
