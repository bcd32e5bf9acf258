//! Aliases under traffic: a weighted canary splits requests by its weights, and an alias
//! moved on one gateway is followed by another gateway at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, service_var};

/// Which version answered a request for `model`.
async fn served_version(app: &TestApp, key: &str, model: &str) -> String {
    let response = app
        .req(Method::POST, "/v1/embeddings", Some(key))
        .json(&json!({"model": model, "input": "a dog"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let version = response.headers().get("x-modelgate-version").and_then(|v| v.to_str().ok());
    version.expect("the answering version is named").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_90_10_canary_splits_a_thousand_requests_by_its_weights() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, dir) = app.acme_with_tiny_model().await;
    app.upload_version_again(&key, "tiny", &dir).await;
    let split = json!({"targets": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]});
    let (status, body) =
        app.call(Method::PUT, "/api/v1/tenants/acme/models/tiny/aliases/production", &key, Some(split)).await;
    assert_eq!(status, 200, "{body}");

    let mut served = BTreeMap::new();
    for _ in 0..125 {
        let calls = (0..8).map(|_| served_version(&app, &key, "tiny:production"));
        for version in futures::future::join_all(calls).await {
            *served.entry(version).or_insert(0u32) += 1;
        }
    }
    println!("1,000 requests to a 90/10 alias: {served:?}");
    let (v1, v2) = (served["acme/tiny@1"], served["acme/tiny@2"]);
    assert_eq!(v1 + v2, 1000, "{served:?}");
    assert!((850..=950).contains(&v1), "version 1 answered {v1} of 1000 (90 ± 5%)");
    assert!((50..=150).contains(&v2), "version 2 answered {v2} of 1000 (10 ± 5%)");
    app.stop().await;
}

/// Gateway B follows an alias moved on gateway A within a second.
async fn alias_move_reaches_the_other_gateway(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let (key, dir) = app.acme_with_tiny_model().await;
    app.upload_version_again(&key, "tiny", &dir).await;
    app.set_alias(&key, "acme", "tiny", "production", 1).await;
    let other = app.second_gateway().await;
    // B has resolved (and may cache) the alias before it moves.
    for _ in 0..3 {
        assert_eq!(served_version(&other, &key, "tiny:production").await, "acme/tiny@1");
    }
    app.set_alias(&key, "acme", "tiny", "production", 2).await;
    let moved = Instant::now();
    loop {
        if served_version(&other, &key, "tiny:production").await == "acme/tiny@2" {
            break;
        }
        assert!(moved.elapsed() < Duration::from_secs(1), "gateway B still serves version 1 a second later");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("gateway B followed the alias after {:?}", moved.elapsed());
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_moved_on_one_gateway_is_followed_by_another_within_a_second_on_sqlite() {
    alias_move_reaches_the_other_gateway(Database::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_moved_on_one_gateway_is_followed_by_another_within_a_second_on_postgres() {
    let Some(url) = service_var("MODELGATE_TEST_POSTGRES_URL", "alias propagation on Postgres") else { return };
    alias_move_reaches_the_other_gateway(Database::Postgres(url)).await;
}
