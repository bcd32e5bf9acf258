//! Usage after a scripted workload equals the workload's counts exactly, per key, model and
//! version and at every step; the audit log holds a row for every change the script made.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp};
use crate::tiny_bert;

/// Sums a counter over the buckets of the rows that match `filter`.
fn total(usage: &Value, counter: &str, filter: impl Fn(&Value) -> bool) -> i64 {
    usage["data"].as_array().expect("data").iter().filter(|p| filter(p)).map(|p| p[counter].as_i64().unwrap_or(0)).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_matches_a_scripted_workload_and_every_change_is_audited() {
    for database in Database::all("usage and audit") {
        usage_and_audit_on(database).await;
    }
}

async fn usage_and_audit_on(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    app.upload_model(&admin, "acme", "tiny", &dir).await;
    app.set_alias(&admin, "acme", "tiny", "production", 1).await;
    let (a, b) = (app.key("acme", "invoker", &admin).await, app.key("acme", "invoker", &admin).await);
    let id = |key: &str| key.split('_').nth(1).expect("key id").to_owned();

    // The script: what each key sends, and what it should count.
    let calls: Vec<(&str, Value, u16)> = vec![
        (&a, json!({"model": "tiny", "input": "hello world"}), 200),
        (&a, json!({"model": "tiny", "input": "a second sentence"}), 200),
        (&a, json!({"model": "tiny:production", "input": ["one", "two three"]}), 200),
        (&a, json!({"model": "tiny", "input": 42}), 400),
        (&b, json!({"model": "tiny@1", "input": "from the other key"}), 200),
        (&b, json!({"model": "nope", "input": "x"}), 404),
    ];
    let mut tokens = std::collections::HashMap::<String, i64>::new();
    for (key, body, want) in &calls {
        let (status, answer) = app.call(Method::POST, "/v1/embeddings", key, Some(body.clone())).await;
        assert_eq!(status, *want, "{body} -> {answer}");
        *tokens.entry(id(key)).or_default() += answer["usage"]["prompt_tokens"].as_i64().unwrap_or(0);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await; // one flush

    let usage = |query: &str| {
        let path = format!("/api/v1/tenants/acme/usage?{query}");
        let (app, admin) = (&app, &admin);
        async move {
            let (status, body) = app.call(Method::GET, &path, admin, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    let by_key = usage("step=minute&group_by=key").await;
    for (key, requests, errors) in [(&a, 4, 1), (&b, 2, 1)] {
        let mine = |p: &Value| p["key_id"] == id(key).as_str();
        assert_eq!(total(&by_key, "requests", mine), requests, "{by_key}");
        assert_eq!(total(&by_key, "errors", mine), errors, "{by_key}");
        assert_eq!(total(&by_key, "input_tokens", mine), tokens[&id(key)], "{by_key}");
        assert!(tokens[&id(key)] > 0);
    }
    let by_version = usage("step=hour&group_by=version").await;
    let tiny = |version: i64| move |p: &Value| p["model"] == "tiny" && p["version"] == version;
    assert_eq!(total(&by_version, "requests", tiny(1)), 4, "three by alias or name, one by number: {by_version}");
    // Requests that resolved no version (bad input, an unknown model) count under one
    // placeholder, whatever name they sent.
    let unresolved = |p: &Value| p["model"] == "(unresolved)" && p["version"] == 0;
    assert_eq!(total(&by_version, "requests", unresolved), 2, "the bad input and \"nope\": {by_version}");
    assert_eq!(total(&by_version, "errors", unresolved), 2);
    assert!(by_version["data"].as_array().expect("data").iter().all(|p| p["model"] != "nope"));
    for step in ["minute", "hour", "day"] {
        let all = usage(&format!("step={step}")).await;
        assert_eq!(total(&all, "requests", |_| true), 6, "{step}: {all}");
        assert_eq!(total(&all, "errors", |_| true), 2, "{step}");
        let buckets: i64 = all["data"]
            .as_array()
            .expect("data")
            .iter()
            .flat_map(|p| p["latency_buckets"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_i64())
            .sum();
        assert_eq!(buckets, 6, "{step}: every request lands in one latency bucket");
    }
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/acme/usage?step=week", &admin, None).await;
    assert_eq!(status, 400);

    // Every change the script made is in the audit log, for the platform admin and the tenant.
    let audit = |query: &str, key: &str| {
        let path = format!("/api/v1/audit?{query}");
        let (app, key) = (&app, key.to_owned());
        async move { app.call(Method::GET, &path, &key, None).await }
    };
    let (status, all) = audit("tenant=acme&limit=1000", &app.admin_key).await;
    assert_eq!(status, 200, "{all}");
    let actions: Vec<&str> =
        all["data"].as_array().expect("data").iter().filter_map(|e| e["action"].as_str()).collect();
    let files = files_in(&dir);
    for (action, count) in [
        ("tenant.create", 1),
        ("key.create", 3),
        ("model.create", 1),
        ("version.create", 1),
        ("version.file.put", files),
        ("version.commit", 1),
        ("alias.set", 1),
    ] {
        assert_eq!(actions.iter().filter(|a| **a == action).count(), count, "{action} in {actions:?}");
    }
    assert_eq!(actions.len(), 8 + files, "nothing else: {actions:?}");
    let (_, keys) = audit("action=key.*", &admin).await;
    assert_eq!(keys["data"].as_array().map(Vec::len), Some(3), "a prefix filter, for the tenant's own admin: {keys}");
    assert!(keys["data"].as_array().expect("data").iter().all(|e| e["tenant"] == "acme"));
    let (_, none) = audit("from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z", &admin).await;
    assert_eq!(none["data"], json!([]), "a time range with nothing in it");
    app.tenant("globex").await;
    assert_eq!(audit("tenant=globex", &admin).await.0, 404, "another tenant's log does not exist for this admin");
    assert_eq!(audit("", &a).await.0, 403, "an invoker reads no audit log");
    app.stop().await;
}

fn files_in(dir: &std::path::Path) -> usize {
    crate::helpers::files_of(dir).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_counted_right_before_a_graceful_stop_survives_the_restart() {
    for database in Database::all("usage across a stop") {
        usage_across_a_stop_on(database).await;
    }
}

/// Calls made just before a stop are still in the meter's memory (it writes every second):
/// the stop must write them, not drop them.
async fn usage_across_a_stop_on(database: Database) {
    const CALLS: i64 = 25;
    let backend = format!("{database:?}");
    let mut app = TestApp::spawn(AppOptions::new(database)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    for i in 0..CALLS {
        let (status, body) = app.embed(&key, "tiny", json!(format!("sentence number {i}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    app.restart().await;
    let (status, usage) = app.call(Method::GET, "/api/v1/tenants/acme/usage?step=minute", &key, None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(total(&usage, "requests", |_| true), CALLS, "{backend}: every call before the stop is counted: {usage}");
    assert_eq!(total(&usage, "errors", |_| true), 0, "{backend}: {usage}");
    app.stop().await;
}

/// The same through the binary: `modelgate dev` stopped by SIGTERM, as a service manager
/// stops it, writes the usage it counted before it exits.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn usage_counted_right_before_sigterm_survives_the_restart() {
    use crate::dev_binary::{free_port, start_dev};
    const CALLS: i64 = 25;
    let dir = tempfile::tempdir().expect("temporary folder");
    let port = free_port();
    let mut dev = start_dev(dir.path(), port, &[]);
    let admin_key =
        dev.stdout.iter().find(|l| l.trim_start().starts_with("mg_")).map(|l| l.trim().to_owned()).expect("admin key");
    let app = TestApp::attached(format!("http://127.0.0.1:{port}"), admin_key);
    let (key, _) = app.acme_with_tiny_model().await;
    for i in 0..CALLS {
        let (status, body) = app.embed(&key, "tiny", json!(format!("sentence number {i}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let exit = dev.terminate();
    assert!(exit.success(), "a graceful stop exits 0: {exit}");
    drop(dev);

    let _dev = start_dev(dir.path(), port, &[]);
    let (status, usage) = app.call(Method::GET, "/api/v1/tenants/acme/usage?step=minute", &key, None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(total(&usage, "requests", |_| true), CALLS, "every call before SIGTERM is counted: {usage}");
}
