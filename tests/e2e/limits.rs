//! Request limits with two gateways on one database: per tenant, per key, both at once (the
//! tightest wins), concurrency; 429 names the limit and `Retry-After` says when it admits.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Database, TestApp, read};

/// Waits, if needed, so that the next few seconds fall inside one calendar minute.
async fn away_from_the_minute_boundary() {
    let into_minute = registry::db::now_ms().rem_euclid(60_000);
    if into_minute > 50_000 {
        tokio::time::sleep(std::time::Duration::from_millis(u64::try_from(60_500 - into_minute).unwrap_or(0))).await;
    }
}

/// Sends requests alternately to both gateways until `n` were answered; answers the number
/// admitted and the last refusal (status, Retry-After, body).
async fn hammer(
    gateways: [&TestApp; 2],
    tenant: &str,
    key: &str,
    n: usize,
) -> (usize, Option<(u16, Option<u64>, Value)>) {
    let (mut admitted, mut refused) = (0, None);
    for i in 0..n {
        let app = gateways[i % 2];
        let response =
            app.req(Method::GET, &format!("/api/v1/tenants/{tenant}/models"), Some(key)).send().await.expect("sent");
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
        let (status, body) = read(response).await;
        match status {
            200 => admitted += 1,
            429 => refused = Some((status, retry_after, body)),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (admitted, refused)
}

fn seconds_left_in_minute() -> u64 {
    u64::try_from(60_000 - registry::db::now_ms().rem_euclid(60_000)).unwrap_or(0).div_ceil(1000)
}

async fn set_tenant_limits(app: &TestApp, tenant: &str, limits: Value) {
    let path = format!("/api/v1/tenants/{tenant}/quotas");
    let (status, body) = app.call(Method::PUT, &path, &app.admin_key, Some(limits)).await;
    assert_eq!(status, 200, "{body}");
}

async fn limits_on(database: Database) {
    let mut app = TestApp::spawn(AppOptions::new(database)).await;
    let admin = app.tenant("acme").await;
    let other = app.second_gateway().await;
    let key = app.key("acme", "viewer", &admin).await;
    away_from_the_minute_boundary().await;

    // The tenant's limit alone, shared by both gateways.
    set_tenant_limits(&app, "acme", json!({"requests_per_minute": 20})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // both gateways' caches
    let (admitted, refused) = hammer([&app, &other], "acme", &key, 40).await;
    assert_eq!(admitted, 20, "exactly the tenant's limit is admitted across two gateways");
    let (_, retry_after, body) = refused.expect("refusals");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the tenant's requests_per_minute limit (20)"), "{message}");
    let left = seconds_left_in_minute();
    let retry_after = retry_after.expect("Retry-After");
    assert!(retry_after.abs_diff(left) <= 1, "Retry-After {retry_after} s is when the minute ends ({left} s)");
    // A restart does not reset the tenant's minute.
    app.restart().await;
    assert_eq!(hammer([&app, &other], "acme", &key, 4).await.0, 0, "the minute's count survives a restart");

    // The key's limit alone; then both, where the tightest wins.
    set_tenant_limits(&app, "acme", json!({})).await;
    let limited = app.key("acme", "viewer", &admin).await;
    let id = limited.split('_').nth(1).expect("key id").to_owned();
    let patch = json!({"limits": {"requests_per_minute": 6}});
    let (status, body) = app.call(Method::PATCH, &format!("/api/v1/tenants/acme/keys/{id}"), &admin, Some(patch)).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    away_from_the_minute_boundary().await;
    let (admitted, refused) = hammer([&app, &other], "acme", &limited, 12).await;
    assert_eq!(admitted, 6, "exactly the key's limit");
    let body = refused.expect("refusals").2;
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().contains("the key's requests_per_minute limit (6)"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["of"], "key");

    // (Another tenant: acme's minute is used up.)
    let globex = app.tenant("globex").await;
    let fresh = app.key("globex", "viewer", &globex).await;
    let id = fresh.split('_').nth(1).expect("key id").to_owned();
    let patch = json!({"limits": {"requests_per_minute": 5}});
    assert_eq!(
        app.call(Method::PATCH, &format!("/api/v1/tenants/globex/keys/{id}"), &globex, Some(patch)).await.0,
        200
    );
    let free = app.key("globex", "viewer", &globex).await;
    set_tenant_limits(&app, "globex", json!({"requests_per_minute": 12})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    away_from_the_minute_boundary().await;
    let (admitted, refused) = hammer([&app, &other], "globex", &fresh, 10).await;
    assert_eq!(admitted, 5, "the key's 5 is tighter than the tenant's 12");
    assert!(refused.expect("refused").2.to_string().contains("the key's requests_per_minute"));
    let (admitted, refused) = hammer([&app, &other], "globex", &free, 10).await;
    assert_eq!(admitted, 7, "the tenant's 12 minus the 5 its other key used");
    assert!(refused.expect("refused").2.to_string().contains("the tenant's requests_per_minute limit (12)"));

    // Concurrency: 2 for the tenant, split between the two live gateways.
    set_tenant_limits(&app, "acme", json!({"concurrent_requests": 2})).await;
    let uploader = app.key("acme", "developer", &admin).await;
    let (status, _) = app
        .call(Method::POST, "/api/v1/tenants/acme/models", &uploader, Some(json!({"name": "m", "task": "embedding"})))
        .await;
    assert_eq!(status, 201);
    let version = app.new_version(&uploader, "acme", "m").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await; // caches, and both heartbeats
    let slow = |app: &TestApp, name: &str, release: tokio::sync::oneshot::Receiver<()>| {
        let body = futures::stream::once(async { Ok::<_, std::io::Error>(b"first".to_vec()) }).chain(
            futures::stream::once(async move {
                let _ = release.await;
                Ok(b"last".to_vec())
            }),
        );
        app.req(Method::PUT, &format!("/api/v1/tenants/acme/models/m/versions/{version}/files/{name}"), Some(&uploader))
            .body(reqwest::Body::wrap_stream(body))
            .send()
    };
    let (release_a, wait_a) = tokio::sync::oneshot::channel();
    let (release_b, wait_b) = tokio::sync::oneshot::channel();
    let upload_a = tokio::spawn(slow(&app, "a.bin", wait_a));
    let upload_b = tokio::spawn(slow(&other, "b.bin", wait_b));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for gateway in [&app, &other] {
        let response =
            gateway.req(Method::GET, "/api/v1/tenants/acme/models", Some(&uploader)).send().await.expect("sent");
        assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        let (status, body) = read(response).await;
        assert_eq!(status, 429, "a third request in flight is refused: {body}");
        assert!(body.to_string().contains("the tenant's concurrent_requests limit (2)"), "{body}");
    }
    release_a.send(()).expect("upload a waits");
    release_b.send(()).expect("upload b waits");
    for upload in [upload_a, upload_b] {
        assert_eq!(upload.await.expect("joined").expect("sent").status(), 201);
    }
    let (status, _) = app.call(Method::GET, "/api/v1/tenants/acme/models", &uploader, None).await;
    assert_eq!(status, 200, "finished requests give their slots back");
    other.stop().await;
    app.stop().await;
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn limits_hold_across_two_gateways_and_the_tightest_wins() {
    for database in Database::all("limits across gateways") {
        limits_on(database).await;
    }
}
