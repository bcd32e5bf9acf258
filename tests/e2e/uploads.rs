//! Resumable uploads survive a cut connection and a gateway restart, on a local folder (chunks
//! as objects) and on S3 (chunks as parts of the bucket's multipart upload); expired and failed
//! sessions leave nothing behind; a session for stored content completes at once.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{AppOptions, Database, TestApp, azure_options, read, s3_options};

const MIB: usize = 1024 * 1024;

async fn send_chunk(app: &TestApp, key: &str, base: &str, index: usize, bytes: Vec<u8>) -> (u16, Value) {
    read(app.req(Method::PUT, &format!("{base}/chunks/{index}"), Some(key)).body(bytes).send().await.expect("sent"))
        .await
}

async fn survives_a_cut_and_a_restart(options: AppOptions) {
    let mut app = TestApp::spawn(options).await;
    let key = app.tenant("acme").await;
    let version = app.draft(&key, "big").await;
    let data: Vec<u8> = (0..300 * MIB as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let chunk = 8 * MIB;
    let uploads = format!("/api/v1/tenants/acme/models/big/versions/{version}/uploads");
    let body = json!({"path": "weights/model.safetensors", "size": data.len(), "sha256": sha256, "chunk_size": chunk});
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let chunks = session["chunks"].as_u64().expect("chunks") as usize;
    assert_eq!(chunks, 38);
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    let part = |i: usize| data[i * chunk..((i + 1) * chunk).min(data.len())].to_vec();
    // Odd chunks first, then even ones: out of order, and four at a time.
    let order: Vec<usize> = (0..chunks).filter(|i| i % 2 == 1).chain((0..chunks).filter(|i| i % 2 == 0)).collect();

    for batch in order[..12].chunks(4) {
        for (status, body) in
            futures::future::join_all(batch.iter().map(|&i| send_chunk(&app, &key, &base, i, part(i)))).await
        {
            assert_eq!(status, 200, "{body}");
        }
    }
    // A connection cut halfway through a chunk: that chunk is not kept.
    let cut = order[12];
    let half: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(part(cut)[..chunk / 2].to_vec()), Err(std::io::Error::other("connection cut"))];
    let response = app
        .req(Method::PUT, &format!("{base}/chunks/{cut}"), Some(&key))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(half)))
        .send()
        .await;
    assert!(response.is_err() || response.is_ok_and(|r| r.status().is_client_error()), "the cut chunk fails");
    let (_, state) = app.call(Method::GET, &base, &key, None).await;
    assert_eq!(state["received"].as_array().map(Vec::len), Some(12), "the cut chunk is not recorded: {state}");

    for batch in order[13..25].chunks(4) {
        for (status, body) in
            futures::future::join_all(batch.iter().map(|&i| send_chunk(&app, &key, &base, i, part(i)))).await
        {
            assert_eq!(status, 200, "{body}");
        }
    }
    app.restart().await;
    let (status, state) = app.call(Method::GET, &base, &key, None).await;
    assert_eq!(status, 200, "the session survives the restart: {state}");
    let received: Vec<usize> =
        state["received"].as_array().expect("received").iter().filter_map(|v| v.as_u64().map(|v| v as usize)).collect();
    assert_eq!(received.len(), 24);
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!(status, 409, "completing with chunks missing is refused: {body}");
    let missing: Vec<usize> = (0..chunks).filter(|i| !received.contains(i)).collect();
    assert!(missing.contains(&cut));
    for batch in missing.chunks(4) {
        for (status, body) in
            futures::future::join_all(batch.iter().map(|&i| send_chunk(&app, &key, &base, i, part(i)))).await
        {
            assert_eq!(status, 200, "{body}");
        }
    }
    let (status, file) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!(status, 201, "{file}");
    assert_eq!((file["sha256"].as_str(), file["size"].as_u64()), (Some(sha256.as_str()), Some(data.len() as u64)));
    let head = app
        .req(
            Method::HEAD,
            &format!("/api/v1/tenants/acme/models/big/versions/{version}/files/weights/model.safetensors"),
            Some(&key),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(head.headers().get("etag").and_then(|v| v.to_str().ok()), Some(format!("\"{sha256}\"").as_str()));
    let path = format!("/api/v1/tenants/acme/models/big/versions/{version}/files/weights/model.safetensors");
    let stored = app.req(Method::GET, &path, Some(&key)).send().await.expect("sent").bytes().await.expect("body");
    assert_eq!(hex::encode(sha2::Sha256::digest(&stored)), sha256, "the stored blob hashes to the declared sha256");
    assert_eq!(app.session_leftovers().await, Vec::<String>::new(), "nothing of the session is left");
    assert_eq!(app.call(Method::GET, &base, &key, None).await.0, 404, "a completed session is gone");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_300_mib_upload_survives_a_cut_connection_and_a_gateway_restart_on_a_local_folder() {
    survives_a_cut_and_a_restart(AppOptions::new(Database::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_300_mib_upload_survives_a_cut_connection_and_a_gateway_restart_on_s3() {
    if let Some(options) = s3_options("resumable upload on S3").await {
        survives_a_cut_and_a_restart(options).await;
    }
}

const CHUNK: usize = 5 * MIB;

/// `chunks_listed`: whether a session's chunks show in the store's listing (Azure keeps the
/// blocks of an uncommitted blob out of every listing).
async fn failed_and_expired_sessions_leave_nothing(options: AppOptions, chunks_listed: bool) {
    let app = TestApp::spawn(options).await;
    let key = app.tenant("acme").await;
    let version = app.draft(&key, "m").await;
    let uploads = format!("/api/v1/tenants/acme/models/m/versions/{version}/uploads");
    let data = vec![5u8; 3 * CHUNK + 10];
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let start = |expires_in: u64| json!({"path": "w.bin", "size": data.len(), "sha256": sha256, "chunk_size": CHUNK, "expires_in": expires_in});
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(start(2))).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["status"], "open");
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    assert_eq!(send_chunk(&app, &key, &base, 0, data[..CHUNK - 1].to_vec()).await.0, 400, "a short chunk");
    assert_eq!(send_chunk(&app, &key, &base, 4, vec![5u8; 10]).await.0, 400, "a chunk past the end");
    assert_eq!(send_chunk(&app, &key, &base, 3, data[3 * CHUNK..].to_vec()).await.0, 200, "the short last chunk");
    assert_eq!(send_chunk(&app, &key, &base, 0, data[..CHUNK].to_vec()).await.0, 200);
    let other = app.tenant("globex").await;
    assert_eq!(app.call(Method::GET, &base.replace("/acme/", "/globex/"), &other, None).await.0, 404);
    for bad in [
        json!({"path": "../x", "size": 1, "sha256": sha256}),
        json!({"path": "x", "size": 1, "sha256": sha256, "chunk_size": MIB}),
        json!({"path": "x", "size": 10_000 * CHUNK + 1, "sha256": sha256, "chunk_size": CHUNK}),
    ] {
        let (status, body) = app.call(Method::POST, &uploads, &key, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} -> {body}");
    }
    if chunks_listed {
        assert!(!app.session_leftovers().await.is_empty(), "the session holds its chunks");
    }

    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.call(Method::GET, &base, &key, None).await.0, 404, "an expired session is gone for the client");
    let (status, report) =
        app.call(Method::POST, "/api/v1/admin/gc", &app.admin_key, Some(json!({"grace_secs": 3600}))).await;
    assert_eq!((status, report["upload_sessions_expired"].as_u64()), (200, Some(1)), "{report}");
    assert_eq!(app.session_leftovers().await, Vec::<String>::new(), "an expired session leaves nothing");

    // Chunks that do not add up to the declared sha256: completing fails and ends the session.
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(start(3600))).await;
    assert_eq!(status, 201, "{session}");
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    for i in 0..4 {
        let mut part = data[i * CHUNK..((i + 1) * CHUNK).min(data.len())].to_vec();
        part[0] ^= u8::from(i == 2);
        assert_eq!(send_chunk(&app, &key, &base, i, part).await.0, 200);
    }
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("digest_mismatch")), "{body}");
    assert_eq!(app.call(Method::GET, &base, &key, None).await.0, 404, "a failed session is ended");
    assert_eq!(app.session_leftovers().await, Vec::<String>::new(), "a failed session leaves nothing");
    let (_, version) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/m/versions/{version}"), &key, None).await;
    assert_eq!(version["files"], json!([]), "nothing was recorded: {version}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_chunks_are_refused_and_failed_or_expired_sessions_leave_nothing_on_a_local_folder() {
    failed_and_expired_sessions_leave_nothing(AppOptions::new(Database::Sqlite), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_chunks_are_refused_and_failed_or_expired_sessions_leave_nothing_on_s3() {
    if let Some(options) = s3_options("failed and expired sessions on S3").await {
        failed_and_expired_sessions_leave_nothing(options, true).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_chunks_are_refused_and_failed_or_expired_sessions_leave_nothing_on_azure() {
    if let Some(options) = azure_options("failed and expired sessions on Azure") {
        failed_and_expired_sessions_leave_nothing(options, false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_for_content_the_tenant_stores_completes_at_once() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let data: Vec<u8> = (0..6 * MIB as u32).map(|i| (i % 253) as u8).collect();
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let first = app.draft(&key, "a").await;
    assert_eq!(app.put_file(&key, "acme", "a", first, "w.bin", data.clone(), true).await.0, 201);
    let (_, before) = app.call(Method::GET, "/api/v1/tenants/acme/quotas", &key, None).await;

    let second = app.draft(&key, "b").await;
    let uploads = format!("/api/v1/tenants/acme/models/b/versions/{second}/uploads");
    let start = json!({"path": "copy.bin", "size": data.len(), "sha256": sha256});
    let (status, started) = app.call(Method::POST, &uploads, &key, Some(start)).await;
    assert_eq!((status, started["status"].as_str()), (200, Some("complete")), "{started}");
    assert_eq!(started["file"]["sha256"], sha256.as_str());
    let (_, version) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/b/versions/{second}"), &key, None).await;
    assert_eq!(version["files"][0]["path"], "copy.bin", "{version}");
    let (_, after) = app.call(Method::GET, "/api/v1/tenants/acme/quotas", &key, None).await;
    assert_eq!(before["used_bytes"], after["used_bytes"], "nothing new is stored");
    let path = format!("/api/v1/tenants/acme/models/b/versions/{second}/files/copy.bin");
    let body = app.req(Method::GET, &path, Some(&key)).send().await.expect("sent").bytes().await.expect("body");
    assert!(body.as_ref() == data.as_slice());

    let wrong_size = json!({"path": "x.bin", "size": data.len() + 1, "sha256": sha256});
    let (status, body) = app.call(Method::POST, &uploads, &key, Some(wrong_size)).await;
    assert_eq!(status, 400, "a size that contradicts the stored content: {body}");
    app.stop().await;
}
