//! Presigned uploads and downloads: bytes go straight between client and bucket (moto, Azurite),
//! and the gateway still verifies every digest.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{AppOptions, Database, TestApp, azure_options, s3_options};

/// Sends the file to a presigned request the gateway handed out, without any credential.
async fn put_signed(upload: &Value, bytes: Vec<u8>) -> u16 {
    let mut request = reqwest::Client::new().put(upload["url"].as_str().expect("a URL")).body(bytes);
    for (name, value) in upload["headers"].as_object().into_iter().flatten() {
        request = request.header(name.as_str(), value.as_str().expect("a header value"));
    }
    request.send().await.expect("the store answers").status().as_u16()
}

async fn presigned_on(options: AppOptions) {
    let app = TestApp::spawn(options).await;
    let key = app.tenant("acme").await;
    let version = app.draft(&key, "m").await;
    let uploads = format!("/api/v1/tenants/acme/models/m/versions/{version}/uploads");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let start =
        |path: &str, sha256: &str| json!({"path": path, "size": data.len(), "sha256": sha256, "presigned": true});

    let (status, session) = app.call(Method::POST, &uploads, &key, Some(start("model.bin", &sha256))).await;
    assert_eq!(status, 201, "{session}");
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!(status, 409, "nothing uploaded yet: {body}");
    let stored = put_signed(&session["upload"], data.clone()).await;
    assert!((200..300).contains(&stored), "the bucket takes the presigned PUT: {stored}");
    let (_, state) = app.call(Method::GET, &base, &key, None).await;
    assert_eq!(state["received"], json!([0]), "{state}");
    let (status, file) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!((status, file["sha256"].as_str()), (201, Some(sha256.as_str())), "{file}");

    // Bytes that do not match the declared digest are refused at completion.
    let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    let other_sha256 = hex::encode(sha2::Sha256::digest(&other));
    let (_, session) = app.call(Method::POST, &uploads, &key, Some(start("other.bin", &other_sha256))).await;
    let mut tampered = other;
    tampered[1000] ^= 1;
    assert!((200..300).contains(&put_signed(&session["upload"], tampered).await));
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("digest_mismatch")), "{body}");

    // Downloads: a short-lived URL straight to the bucket.
    let path = format!("/api/v1/tenants/acme/models/m/versions/{version}/files/model.bin?presigned=true");
    let (status, signed) = app.call(Method::GET, &path, &key, None).await;
    assert_eq!(status, 200, "{signed}");
    let fetched = reqwest::get(signed["url"].as_str().expect("url")).await.expect("the store answers");
    assert_eq!(fetched.status().as_u16(), 200);
    assert!(
        fetched.bytes().await.expect("body").as_ref() == data.as_slice(),
        "the presigned download is byte-identical"
    );
    let (_, files) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/m/versions/{version}"), &key, None).await;
    let paths: Vec<&str> =
        files["files"].as_array().expect("files").iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths, ["model.bin"], "the tampered upload recorded nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_upload_and_download_on_s3() {
    if let Some(options) = s3_options("presigned S3").await {
        presigned_on(options).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn presigned_upload_and_download_on_azure() {
    if let Some(options) = azure_options("presigned Azure") {
        presigned_on(options).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_sign_says_so() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let version = app.draft(&key, "m").await;
    let body = json!({"path": "a", "size": 10, "sha256": "0".repeat(64), "presigned": true});
    let (status, answer) = app
        .call(Method::POST, &format!("/api/v1/tenants/acme/models/m/versions/{version}/uploads"), &key, Some(body))
        .await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"].as_str().unwrap_or_default().contains("cannot presign"), "{answer}");
    app.stop().await;
}
