//! The runner's model cache under a budget that fits two of three models: round-robin traffic
//! never fails and never exceeds the budget, evictions show in the status, a model serving a
//! long request stays loaded, pinned models stay, and load/unload/pin work over gRPC.

use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use proto::v1::{PinRequest, StatusRequest, StatusResponse, UnloadRequest};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp};
use crate::{tiny_bert, tiny_llama};

async fn status(app: &TestApp) -> StatusResponse {
    app.runner_client().await.status(StatusRequest {}).await.expect("status").into_inner()
}

fn loaded(status: &StatusResponse) -> Vec<String> {
    let mut names: Vec<String> = status.loaded.iter().map(|m| m.display_name.clone()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budget_for_two_of_three_models_serves_all_three_and_keeps_busy_ones() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let key = app.key("acme", "invoker", &admin).await;
    for name in ["b", "c"] {
        let dir = app.dir.path().join(name);
        tiny_bert::write(&dir);
        app.upload_model(&admin, "acme", name, &dir).await;
    }
    let dir = app.dir.path().join("a");
    tiny_llama::write_sized(&dir, tiny_llama::LONG);
    app.upload_task_model(&admin, "acme", "a", "generation", &dir).await;
    // Learn each model's cost with room for all, then allow any two but not three.
    for name in ["b", "c"] {
        assert_eq!(app.embed(&key, name, json!("hello")).await.0, 200);
    }
    let body = json!({"model": "a", "prompt": "the cat", "max_tokens": 2});
    assert_eq!(app.call(Method::POST, "/v1/completions", &key, Some(body)).await.0, 200);
    let costs: Vec<u64> = status(&app).await.loaded.iter().map(|m| m.memory_bytes).collect();
    let mut sorted = costs.clone();
    sorted.sort();
    // (A load reserves the size of its weight files, headers included, a little more than the
    // tensors take: room for that too.)
    let budget = sorted[1] + sorted[2] + 16 * 1024;
    assert!(budget < costs.iter().sum::<u64>(), "two fit, three do not: {costs:?}");
    app.config_mut().runner.memory_budget_bytes = Some(budget);
    app.restart().await;

    // Round robin over the three: every request succeeds, the budget always holds.
    for round in 0..4 {
        for name in ["a", "b", "c"] {
            let (status_code, body) = if name == "a" {
                let body = json!({"model": "a", "prompt": "the cat", "max_tokens": 2});
                app.call(Method::POST, "/v1/completions", &key, Some(body)).await
            } else {
                app.embed(&key, name, json!(format!("round {round}"))).await
            };
            assert_eq!(status_code, 200, "{name} in round {round}: {body}");
            let now = status(&app).await;
            assert!(now.memory_used_bytes <= budget, "{} bytes used over a budget of {budget}", now.memory_used_bytes);
        }
    }
    let after = status(&app).await;
    assert!(after.cache_evictions >= 4, "the status shows the evictions: {}", after.cache_evictions);

    // A long generation on a (1,500 tokens: seconds): a stays loaded while b and c
    // take turns in the room left.
    let long = json!({"model": "a", "prompt": "the cat", "max_tokens": 1500, "stream": true});
    let response = app.req(Method::POST, "/v1/completions", Some(&key)).json(&long).send().await.expect("sent");
    let mut stream = response.bytes_stream();
    stream.next().await.expect("a first chunk").expect("bytes");
    for name in ["b", "c", "b", "c"] {
        assert_eq!(app.embed(&key, name, json!("while a works")).await.0, 200, "{name}");
        let now = status(&app).await;
        let a = now.loaded.iter().find(|m| m.display_name == "acme/a@1");
        assert!(a.is_some_and(|a| a.in_flight == 1), "a serves a request and stays: {:?}", loaded(&now));
        assert!(now.memory_used_bytes <= budget);
    }
    while let Some(chunk) = stream.next().await {
        chunk.expect("the rest of the stream");
    }

    // Pinned c stays while a and b take turns; unpinned, it may go; unload drops an idle model.
    let c = after.loaded.iter().chain(status(&app).await.loaded.iter()).find(|m| m.display_name == "acme/c@1").cloned();
    let mut runner = app.runner_client().await;
    if let Some(c) = c {
        let pinned = runner.pin(PinRequest { version_id: c.version_id.clone(), pinned: true }).await.expect("pin");
        if pinned.into_inner().loaded {
            for name in ["a", "b", "a", "b"] {
                let ok = if name == "a" {
                    let body = json!({"model": "a", "prompt": "the cat", "max_tokens": 2});
                    app.call(Method::POST, "/v1/completions", &key, Some(body)).await.0
                } else {
                    app.embed(&key, name, json!("pinned c")).await.0
                };
                assert_eq!(ok, 200);
                assert!(loaded(&status(&app).await).contains(&"acme/c@1".to_owned()), "pinned c stays");
            }
            runner.pin(PinRequest { version_id: c.version_id.clone(), pinned: false }).await.expect("unpin");
            let unloaded =
                runner.unload(UnloadRequest { version_id: c.version_id }).await.expect("unload").into_inner();
            assert!(unloaded.unloaded);
            assert!(!loaded(&status(&app).await).contains(&"acme/c@1".to_owned()), "unloaded");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_load_reaches_every_waiter_and_is_tried_again_next_time() {
    use sha2::Digest as _;
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("m");
    tiny_bert::write(&dir);
    app.upload_model(&admin, "acme", "m", &dir).await;
    let (_, tenants) = app.call(Method::GET, "/api/v1/tenants", &app.admin_key, None).await;
    let tenant_id = tenants["data"][0]["id"].as_str().expect("tenant id").to_owned();
    let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
    let digest = registry::names::Digest::parse(&hex::encode(sha2::Sha256::digest(&weights))).expect("a digest");
    let storage = app.storage();
    let blob = storage.blob_path(&tenant_id, &digest);
    let store = storage.object_store();
    store.delete(&blob).await.expect("the blob goes missing");

    let calls = (0..6).map(|i| app.embed(&admin, "m", json!(format!("hello {i}"))));
    for (code, body) in futures::future::join_all(calls).await {
        assert!(code >= 500, "every waiter gets the failure: {code} {body}");
    }
    // (Concurrent waiters share a load: see inference.rs; a quick failure may end before all
    // of these arrive, so how many loads they caused is not fixed here.)
    let failed_loads = status(&app).await.loads_total;
    assert!((1..=6).contains(&failed_loads));
    store.put(&blob, weights.into()).await.expect("the blob is back");
    let (code, body) = app.embed(&admin, "m", json!("hello")).await;
    assert_eq!(code, 200, "the failure was not remembered: {body}");
    assert_eq!(status(&app).await.loads_total, failed_loads + 1, "the next request loads again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_admins_load_pin_and_unload_models_through_the_api() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("m");
    tiny_bert::write(&dir);
    app.upload_model(&admin, "acme", "m", &dir).await;
    let base = "/api/v1/admin/tenants/acme/models/m/versions/1";
    let runners = || async { app.call(Method::GET, "/api/v1/admin/runners", &app.admin_key, None).await.1 };
    let models = |runners: &serde_json::Value| runners["data"][0]["models"].as_array().cloned().unwrap_or_default();
    assert!(models(&runners().await).is_empty(), "nothing is loaded before");

    let (status, body) =
        app.call(Method::POST, &format!("{base}/load"), &app.admin_key, Some(json!({"pin": true}))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["memory_bytes"].as_u64().is_some_and(|n| n > 0), "{body}");
    let now = runners().await;
    assert_eq!(now["data"][0]["healthy"], true);
    assert_eq!(models(&now)[0]["name"], "acme/m@1", "preloaded before any request: {now}");
    assert_eq!(models(&now)[0]["pinned"], true);
    assert_eq!(now["data"][0]["loads_total"], 1);
    assert_eq!(app.embed(&admin, "m", json!("hello")).await.0, 200);
    assert_eq!(runners().await["data"][0]["loads_total"], 1, "the request found it loaded");

    let (status, body) =
        app.call(Method::POST, &format!("{base}/pin"), &app.admin_key, Some(json!({"pinned": false}))).await;
    assert_eq!((status, body["data"][0]["loaded"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = app.call(Method::POST, &format!("{base}/unload"), &app.admin_key, None).await;
    assert_eq!((status, body["data"][0]["unloaded"].as_bool()), (200, Some(true)), "{body}");
    assert!(models(&runners().await).is_empty(), "unloaded");
    let (status, _) = app.call(Method::POST, &format!("{base}/load"), &admin, None).await;
    assert_eq!(status, 403, "a tenant admin manages no runner");
    let (status, _) =
        app.call(Method::POST, "/api/v1/admin/tenants/acme/models/m/versions/9/load", &app.admin_key, None).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_models_unload_after_their_ttl_unless_pinned() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    app.config_mut().runner.idle_ttl_secs = 1;
    app.restart().await;
    let admin = app.tenant("acme").await;
    for name in ["kept", "idle"] {
        let dir = app.dir.path().join(name);
        tiny_bert::write(&dir);
        app.upload_model(&admin, "acme", name, &dir).await;
        assert_eq!(app.embed(&admin, name, json!("hello")).await.0, 200);
    }
    let kept = status(&app).await.loaded.into_iter().find(|m| m.display_name == "acme/kept@1").expect("loaded");
    let mut runner = app.runner_client().await;
    runner.pin(PinRequest { version_id: kept.version_id, pinned: true }).await.expect("pin");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(loaded(&status(&app).await), ["acme/kept@1"], "the idle model went, the pinned one stayed");
    assert_eq!(app.embed(&admin, "idle", json!("hello")).await.0, 200, "and comes back on demand");
    // Our own gRPC connection would keep the runner's graceful shutdown waiting (seen once).
    drop(runner);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_mid_stream_stops_its_generation() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let dir = app.dir.path().join("long");
    tiny_llama::write_sized(&dir, tiny_llama::LONG);
    app.upload_task_model(&admin, "acme", "long", "generation", &dir).await;
    let long = json!({"model": "long", "prompt": "the cat", "max_tokens": 3000, "stream": true});
    let response = app.req(Method::POST, "/v1/completions", Some(&admin)).json(&long).send().await.expect("sent");
    let mut stream = response.bytes_stream();
    stream.next().await.expect("a first chunk").expect("bytes");
    // The model's thread counts a generation when it returns.
    let finished = |s: &StatusResponse| s.loaded.iter().map(|m| m.requests_total).sum::<u64>();
    assert_eq!(finished(&status(&app).await), 0, "generating");
    drop(stream);
    // 3,000 tokens take many seconds; the thread stops at its next token once the client left.
    let started = std::time::Instant::now();
    while finished(&status(&app).await) == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "the generation stopped when its client left");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status(&app).await.loaded[0].in_flight, 0);
    app.stop().await;
}

/// A client that connects to the runner and never finishes its HTTP/2 handshake (or keeps a
/// connection open for any reason) must not keep a stopping runner waiting for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_runner_stops_within_its_deadline_while_a_connection_stays_open() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let addr = app.runner_addr();
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("a connection to the runner");
    let started = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(30), app.stop()).await.expect("the runner stopped");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "stopped after {:?}", started.elapsed());
}
