//! Lists page by cursor, stably: items added while paging cause no duplicates or gaps.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp};

/// Pages through `path` `limit` at a time, calling `between` after each page; returns every
/// item's `field`, in order.
async fn walk(
    app: &TestApp,
    key: &str,
    path: &str,
    field: &str,
    limit: usize,
    mut between: impl AsyncFnMut(),
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let join = if path.contains('?') { '&' } else { '?' };
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}{join}limit={limit}&cursor={c}"),
            None => format!("{path}{join}limit={limit}"),
        };
        let (status, page) = app.call(Method::GET, &url, key, None).await;
        assert_eq!(status, 200, "{url}: {page}");
        let items = page["data"].as_array().expect("data");
        assert!(items.len() <= limit);
        seen.extend(items.iter().map(|i| match &i[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
        between().await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
    }
    panic!("{path} did not end within 100 pages");
}

fn assert_complete(seen: &[String], before: &BTreeSet<String>, what: &str) {
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "{what}: no item twice: {seen:?}");
    assert!(before.is_subset(&unique), "{what}: every item that existed before paging is seen: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_list_pages_stably_while_items_are_added() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let create_model = async |name: String| {
        let (status, body) = app
            .call(Method::POST, "/api/v1/tenants/acme/models", &key, Some(json!({ "name": name, "task": "embedding" })))
            .await;
        assert_eq!(status, 201, "{body}");
    };
    for i in 0..7 {
        create_model(format!("m{i}")).await;
    }
    let before: BTreeSet<String> = (0..7).map(|i| format!("m{i}")).collect();
    let mut added = 0;
    let seen = walk(&app, &key, "/api/v1/tenants/acme/models", "name", 3, async || {
        // One name sorts before every cursor, one after.
        create_model(format!("a{added}")).await;
        create_model(format!("z{added}")).await;
        added += 1;
    })
    .await;
    assert_complete(&seen, &before, "models");

    for _ in 0..5 {
        app.new_version(&key, "acme", "m0").await;
    }
    let before: BTreeSet<String> = (1..=5).map(|n| n.to_string()).collect();
    let seen = walk(&app, &key, "/api/v1/tenants/acme/models/m0/versions", "version", 2, async || {
        app.new_version(&key, "acme", "m0").await;
    })
    .await;
    assert_complete(&seen, &before, "versions");

    let mut before = BTreeSet::new();
    for role in ["viewer", "invoker", "developer", "viewer"] {
        app.key("acme", role, &key).await;
    }
    let (_, all) = app.call(Method::GET, "/api/v1/tenants/acme/keys?limit=1000", &key, None).await;
    before.extend(all["data"].as_array().expect("keys").iter().filter_map(|k| k["id"].as_str().map(str::to_owned)));
    let seen = walk(&app, &key, "/api/v1/tenants/acme/keys", "id", 2, async || {
        app.key("acme", "viewer", &key).await;
    })
    .await;
    assert_complete(&seen, &before, "keys");

    for name in ["b1", "b2", "b3", "b4"] {
        app.tenant(name).await;
    }
    let (_, all) = app.call(Method::GET, "/api/v1/tenants?limit=1000", &app.admin_key, None).await;
    let before: BTreeSet<String> =
        all["data"].as_array().expect("tenants").iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect();
    let mut n = 0;
    let seen = walk(&app, &app.admin_key, "/api/v1/tenants", "name", 2, async || {
        n += 1;
        app.tenant(&format!("c{n}")).await;
    })
    .await;
    assert_complete(&seen, &before, "tenants");

    let uploads = "/api/v1/tenants/acme/models/m0/versions/1/uploads";
    let start_session = async |n: usize| {
        let body = json!({"path": format!("f{n}.bin"), "size": 10, "sha256": format!("{n:064x}")});
        let (status, session) = app.call(Method::POST, uploads, &key, Some(body)).await;
        assert_eq!(status, 201, "{session}");
        session["id"].as_str().expect("id").to_owned()
    };
    let mut before = BTreeSet::new();
    for n in 0..5 {
        before.insert(start_session(n).await);
    }
    let mut n = 100;
    let seen = walk(&app, &key, uploads, "id", 2, async || {
        n += 1;
        start_session(n).await;
    })
    .await;
    assert_complete(&seen, &before, "upload sessions");

    let (_, all) = app.call(Method::GET, "/api/v1/tenants/acme/audit?limit=1000", &key, None).await;
    let entries = all["data"].as_array().expect("audit").len();
    let seen = walk(&app, &key, "/api/v1/tenants/acme/audit", "at", 4, async || {
        create_model(format!("late{}", uuid::Uuid::now_v7().simple())).await;
    })
    .await;
    assert_eq!(
        seen.len(),
        entries,
        "audit pages newest first: entries added while paging are newer than the cursor and not seen"
    );

    let (status, body) = app.call(Method::GET, "/api/v1/tenants/acme/models?limit=0", &key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/acme/models?cursor=%25%25", &key, None).await;
    assert_eq!(status, 400);
    let (status, body) = app.call(Method::GET, "/api/v1/tenants/acme/models?colour=red", &key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn models_filter_by_task_tag_and_prefix_and_patch_their_details() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    for (name, tags) in
        [("bert-small", json!(["nlp", "small"])), ("bert-large", json!(["nlp"])), ("minilm", json!(["small"]))]
    {
        let body = json!({ "name": name, "task": "embedding", "tags": tags, "description": format!("{name} model") });
        assert_eq!(app.call(Method::POST, "/api/v1/tenants/acme/models", &key, Some(body)).await.0, 201);
    }
    let names = async |query: &str| -> Vec<String> {
        let (status, page) = app.call(Method::GET, &format!("/api/v1/tenants/acme/models?{query}"), &key, None).await;
        assert_eq!(status, 200, "{query}: {page}");
        page["data"].as_array().expect("data").iter().filter_map(|m| m["name"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(names("tag=small").await, ["bert-small", "minilm"]);
    assert_eq!(names("name_prefix=bert-").await, ["bert-large", "bert-small"]);
    assert_eq!(names("name_prefix=bert-&tag=small").await, ["bert-small"]);
    assert_eq!(names("task=embedding").await.len(), 3);
    assert_eq!(app.call(Method::GET, "/api/v1/tenants/acme/models?task=dancing", &key, None).await.0, 400);

    let path = "/api/v1/tenants/acme/models/minilm";
    let (status, body) = app.call(Method::PATCH, path, &key, Some(json!({ "tags": ["prod", "small", "prod"] }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["tags"].clone(), body["description"].clone()), (json!(["prod", "small"]), json!("minilm model")));
    let (_, body) = app.call(Method::PATCH, path, &key, Some(json!({ "description": "sentence embeddings" }))).await;
    assert_eq!(
        (body["tags"].clone(), body["description"].clone()),
        (json!(["prod", "small"]), json!("sentence embeddings"))
    );
    let (_, body) = app.call(Method::GET, path, &key, None).await;
    assert_eq!(body["description"], "sentence embeddings", "the change is stored");
    assert_eq!(names("tag=prod").await, ["minilm"]);
    let (status, _) = app.call(Method::PATCH, path, &key, Some(json!({ "tags": ["has space"] }))).await;
    assert_eq!(status, 400);
    let viewer = app.key("acme", "viewer", &key).await;
    assert_eq!(app.call(Method::PATCH, path, &viewer, Some(json!({ "description": "x" }))).await.0, 403);
    app.stop().await;
}
