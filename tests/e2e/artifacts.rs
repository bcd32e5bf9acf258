//! The runner's artifact disk cache: a corrupt file is detected and fetched again, and the
//! cache keeps to its size bound by evicting the least recently used files.

use std::path::PathBuf;

use serde_json::json;
use sha2::Digest as _;

use crate::helpers::{AppOptions, Database, TestApp, embedding, files_of};
use crate::tiny_bert;

fn cached(app: &TestApp, bytes: &[u8]) -> PathBuf {
    app.data_dir().join("artifacts/sha256").join(hex::encode(sha2::Sha256::digest(bytes)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_cached_file_is_fetched_again_and_the_cache_keeps_its_bound() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("acme").await;
    let (a, b) = (app.dir.path().join("a"), app.dir.path().join("b"));
    tiny_bert::write(&a);
    tiny_bert::write(&b);
    app.upload_model(&admin, "acme", "a", &a).await;
    app.upload_model(&admin, "acme", "b", &b).await;
    let key = app.key("acme", "invoker", &admin).await;
    let (status, first) = app.embed(&key, "a", json!("hello world")).await;
    assert_eq!(status, 200, "{first}");

    // A cached weights file goes bad on disk; after a restart (nothing in memory) the runner
    // notices at load time and fetches it again.
    let weights_a = std::fs::read(a.join("model.safetensors")).expect("weights");
    let path_a = cached(&app, &weights_a);
    std::fs::write(&path_a, b"not the weights").expect("corrupting the cached copy");
    app.restart().await;
    let (status, again) = app.embed(&key, "a", json!("hello world")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(embedding(&again, 0), embedding(&first, 0), "the same model answers");
    assert!(std::fs::read(&path_a).expect("cached again") == weights_a, "the cached copy is whole again");

    // A bound that holds one model's files: loading b evicts a's weights (used longest ago),
    // never b's own.
    let shared: u64 = files_of(&a)
        .iter()
        .filter(|(p, _)| p != "model.safetensors")
        .map(|(_, l)| std::fs::metadata(l).expect("file").len())
        .sum();
    let bound = weights_a.len() as u64 + shared + 1024;
    app.config_mut().runner.cache_max_bytes = bound;
    app.restart().await;
    assert_eq!(app.embed(&key, "a", json!("hi")).await.0, 200);
    assert_eq!(app.embed(&key, "b", json!("hi")).await.0, 200);
    let weights_b = std::fs::read(b.join("model.safetensors")).expect("weights");
    assert!(!path_a.exists(), "a's weights were evicted");
    assert!(cached(&app, &weights_b).exists(), "b's weights stay while b loads");
    let total: u64 = std::fs::read_dir(app.data_dir().join("artifacts/sha256"))
        .expect("cache")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    assert!(total <= bound, "{total} bytes cached; the bound is {bound}");
    app.restart().await;
    assert_eq!(app.embed(&key, "a", json!("hi")).await.0, 200, "an evicted file is fetched again");
    app.stop().await;
}
