//! Resumable uploads survive a cut connection and a gateway restart; expired sessions leave nothing.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{AppOptions, Database, TestApp, read};

const MIB: usize = 1024 * 1024;

fn sessions_dir(app: &TestApp) -> Vec<std::path::PathBuf> {
    let tenants = app.dir.path().join("blobs/tenants");
    let mut leftovers = Vec::new();
    for tenant in std::fs::read_dir(tenants).into_iter().flatten().flatten() {
        for session in std::fs::read_dir(tenant.path().join("sessions")).into_iter().flatten().flatten() {
            leftovers.extend(std::fs::read_dir(session.path()).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    leftovers
}

async fn send_chunk(app: &TestApp, key: &str, base: &str, index: usize, bytes: Vec<u8>) -> (u16, Value) {
    read(app.req(Method::PUT, &format!("{base}/chunks/{index}"), Some(key)).body(bytes).send().await.expect("sent"))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_300_mib_upload_survives_a_cut_connection_and_a_gateway_restart() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
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
    assert!(sessions_dir(&app).is_empty(), "no chunk is left after completion: {:?}", sessions_dir(&app));
    assert_eq!(app.call(Method::GET, &base, &key, None).await.0, 404, "a completed session is gone");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_chunks_are_refused_and_expired_sessions_leave_nothing() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let version = app.draft(&key, "m").await;
    let uploads = format!("/api/v1/tenants/acme/models/m/versions/{version}/uploads");
    let data = vec![5u8; 3 * MIB + 10];
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    let start = |expires_in: u64| json!({"path": "w.bin", "size": data.len(), "sha256": sha256, "chunk_size": MIB, "expires_in": expires_in});
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(start(1))).await;
    assert_eq!(status, 201, "{session}");
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    assert_eq!(send_chunk(&app, &key, &base, 0, data[..MIB - 1].to_vec()).await.0, 400, "a short chunk");
    assert_eq!(send_chunk(&app, &key, &base, 4, vec![5u8; 10]).await.0, 400, "a chunk past the end");
    assert_eq!(send_chunk(&app, &key, &base, 3, data[3 * MIB..].to_vec()).await.0, 200, "the short last chunk");
    assert_eq!(send_chunk(&app, &key, &base, 0, data[..MIB].to_vec()).await.0, 200);
    let other = app.tenant("globex").await;
    assert_eq!(app.call(Method::GET, &base.replace("/acme/", "/globex/"), &other, None).await.0, 404);
    let (status, _) =
        app.call(Method::POST, &uploads, &key, Some(json!({"path": "../x", "size": 1, "sha256": sha256}))).await;
    assert_eq!(status, 400);
    assert!(!sessions_dir(&app).is_empty());

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.call(Method::GET, &base, &key, None).await.0, 404, "an expired session is gone for the client");
    let (status, report) =
        app.call(Method::POST, "/api/v1/admin/gc", &app.admin_key, Some(json!({"grace_secs": 3600}))).await;
    assert_eq!((status, report["upload_sessions_expired"].as_u64()), (200, Some(1)), "{report}");
    assert!(sessions_dir(&app).is_empty(), "an expired session leaves no chunk: {:?}", sessions_dir(&app));
    app.stop().await;
}
