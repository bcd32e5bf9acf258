//! Upload, commit, byte-identical download and inference on every object store that runs here:
//! a local folder always, S3 through moto and Azure Blob through Azurite when their variables are set.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, embedding, files_of};
use crate::tiny_bert;

async fn round_trip(options: AppOptions) {
    let app = TestApp::spawn(options).await;
    let key = app.tenant("acme").await;
    let model_dir = app.dir.path().join("tiny");
    tiny_bert::write(&model_dir);
    // Larger than one upload part, so the multipart path runs on every store.
    let big: Vec<u8> = (0..17 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::create_dir_all(model_dir.join("extra")).expect("folder");
    std::fs::write(model_dir.join("extra/large.bin"), &big).expect("large file");
    let committed = app.upload_model(&key, "acme", "tiny", &model_dir).await;
    assert_eq!(committed["status"], "ready");
    assert_eq!(committed["architecture"], "bert");

    for (relative, local) in files_of(&model_dir) {
        let original = std::fs::read(&local).expect("original file");
        let response = app
            .req(Method::GET, &format!("/api/v1/tenants/acme/models/tiny/versions/1/files/{relative}"), Some(&key))
            .send()
            .await
            .expect("download sent");
        assert_eq!(response.status().as_u16(), 200, "{relative}");
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let downloaded = response.bytes().await.expect("download body");
        assert!(downloaded.as_ref() == original.as_slice(), "{relative} comes back byte for byte");
        use sha2::Digest as _;
        assert_eq!(etag, Some(format!("\"{}\"", hex::encode(sha2::Sha256::digest(&original)))));
    }

    check_download_headers(&app, &key, &std::fs::read(model_dir.join("model.safetensors")).expect("weights")).await;

    let (status, ready) = app.call(Method::GET, "/readyz", &key, None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");

    let (status, body) = app.embed(&key, "tiny", json!(["the cat sat on the mat", "hello world"])).await;
    assert_eq!(status, 200, "{body}");
    let got = embedding(&body, 0);
    let want = tiny_bert::reference_embedding(&model_dir, "the cat sat on the mat");
    assert_eq!(got.len(), 32);
    assert!(
        crate::helpers::max_abs_diff(&got, &want) <= 1e-5,
        "batched, padded inference matches the reference within 1e-5"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_on_a_local_folder() {
    round_trip(AppOptions::new(Database::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_on_s3_through_moto() {
    if let Some(options) = crate::helpers::s3_options("S3 round trip").await {
        round_trip(options).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_on_azure_blob_through_azurite() {
    if let Some(options) = crate::helpers::azure_options("Azure Blob round trip") {
        round_trip(options).await;
    }
}

/// HEAD, single ranges (as HF clients send `Range: bytes=0-0`), suffix ranges (which Azure
/// itself refuses), conditional GETs and unsatisfiable ranges.
async fn check_download_headers(app: &TestApp, key: &str, original: &[u8]) {
    let path = "/api/v1/tenants/acme/models/tiny/versions/1/files/model.safetensors";
    let size = original.len();
    let head = app.req(Method::HEAD, path, Some(key)).send().await.expect("HEAD sent");
    assert_eq!(head.status().as_u16(), 200);
    let header =
        |r: &reqwest::Response, name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header(&head, "content-length"), Some(size.to_string()));
    assert_eq!(header(&head, "accept-ranges").as_deref(), Some("bytes"));
    let etag = header(&head, "etag").expect("an ETag");

    for (range, want) in [
        ("bytes=0-0", 0..1),
        ("bytes=10-19", 10..20),
        (&format!("bytes={}-", size - 5), size - 5..size),
        ("bytes=-7", size - 7..size),
    ] {
        let response = app.req(Method::GET, path, Some(key)).header("range", range).send().await.expect("range sent");
        assert_eq!(response.status().as_u16(), 206, "{range}");
        assert_eq!(
            header(&response, "content-range"),
            Some(format!("bytes {}-{}/{size}", want.start, want.end - 1)),
            "{range}"
        );
        let body = response.bytes().await.expect("body");
        assert!(body.as_ref() == &original[want.clone()], "{range} returns exactly those bytes");
    }
    let response =
        app.req(Method::GET, path, Some(key)).header("range", format!("bytes={size}-")).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 416);
    assert_eq!(header(&response, "content-range"), Some(format!("bytes */{size}")));
    let response = app.req(Method::GET, path, Some(key)).header("if-none-match", &etag).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 304, "the same ETag is not sent again");
}
