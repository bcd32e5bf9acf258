//! Garbage collection deletes what nothing references, and never what an upload is about to.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp};

async fn gc(app: &TestApp, grace_secs: u64) -> serde_json::Value {
    let (status, report) =
        app.call(Method::POST, "/api/v1/admin/gc", &app.admin_key, Some(json!({ "grace_secs": grace_secs }))).await;
    assert_eq!(status, 200, "{report}");
    report
}

async fn model_with_file(app: &TestApp, key: &str, model: &str, bytes: &[u8]) -> i64 {
    let version = app.draft(key, model).await;
    let (status, body) = app.put_file(key, "acme", model, version, "b.bin", bytes.to_vec(), true).await;
    assert_eq!(status, 201, "{body}");
    version
}

async fn delete_model(app: &TestApp, key: &str, model: &str) {
    assert_eq!(app.call(Method::DELETE, &format!("/api/v1/tenants/acme/models/{model}"), key, None).await.0, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_collection_deletes_only_unreferenced_blobs_and_stale_staging() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let shared = vec![7u8; 10_000];
    let unique = vec![9u8; 3_000];
    model_with_file(&app, &key, "kept", &shared).await;
    let version = model_with_file(&app, &key, "dropped", &shared).await;
    assert_eq!(app.put_file(&key, "acme", "dropped", version, "u.bin", unique.clone(), true).await.0, 201);

    assert_eq!(gc(&app, 0).await["blobs_deleted"], 0, "everything is referenced");
    delete_model(&app, &key, "dropped").await;
    assert_eq!(gc(&app, 3600).await["blobs_deleted"], 0, "recently used blobs are spared by the grace period");
    let report = gc(&app, 0).await;
    assert_eq!(
        (report["blobs_deleted"].as_u64(), report["bytes_freed"].as_u64()),
        (Some(1), Some(unique.len() as u64)),
        "{report}"
    );

    let response = app
        .req(Method::GET, "/api/v1/tenants/acme/models/kept/versions/1/files/b.bin", Some(&key))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.bytes().await.expect("body").as_ref() == shared.as_slice(), "the shared blob survived");

    // A staged upload a crash left behind is collected once older than the grace period.
    let (_, tenants) = app.call(Method::GET, "/api/v1/tenants", &app.admin_key, None).await;
    let tenant_id =
        tenants["data"].as_array().expect("tenants").iter().find(|t| t["name"] == "acme").expect("acme")["id"]
            .as_str()
            .expect("id")
            .to_owned();
    let leftover = app.dir.path().join(format!("blobs/tenants/{tenant_id}/staging/crashed/data"));
    std::fs::create_dir_all(leftover.parent().expect("parent")).expect("folder");
    std::fs::write(&leftover, b"half an upload").expect("write");
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options().write(true).open(&leftover).expect("open").set_modified(two_days_ago).expect("mtime");
    assert_eq!(gc(&app, 3600).await["staged_uploads_deleted"], 1);
    assert!(!leftover.exists());
    app.stop().await;
}

async fn race_on(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let key = app.tenant("acme").await;
    let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    model_with_file(&app, &key, "seed", &bytes).await;
    delete_model(&app, &key, "seed").await;
    // Each round the blob is unreferenced and old enough for GC while an upload of the same
    // bytes, finding it stored, references it; whichever wins, the file must stay readable.
    let (mut collected, rounds) = (0, 30);
    for round in 0..rounds {
        let model = format!("m{round}");
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/tenants/acme/models",
                &key,
                Some(json!({ "name": model, "task": "embedding" })),
            )
            .await;
        assert_eq!(status, 201);
        let version = app.new_version(&key, "acme", &model).await;
        // GC starts 0-4 ms after the upload, so the two meet at different points of each other.
        let delayed_gc = async {
            tokio::time::sleep(std::time::Duration::from_micros(1000 * (round % 5))).await;
            gc(&app, 0).await
        };
        let ((status, body), report) =
            tokio::join!(app.put_file(&key, "acme", &model, version, "b.bin", bytes.clone(), true), delayed_gc);
        assert_eq!(status, 201, "{body}");
        collected += report["blobs_deleted"].as_u64().unwrap_or(0);
        let path = format!("/api/v1/tenants/acme/models/{model}/versions/{version}/files/b.bin");
        let response = app.req(Method::GET, &path, Some(&key)).send().await.expect("sent");
        assert_eq!(response.status().as_u16(), 200, "round {round}: the referenced blob exists");
        assert!(response.bytes().await.expect("body").as_ref() == bytes.as_slice(), "round {round}: intact");
        delete_model(&app, &key, &model).await;
    }
    eprintln!("GC race: GC deleted the blob first in {collected} of {rounds} rounds; every upload stayed readable");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_never_deletes_a_blob_an_upload_is_about_to_reference() {
    for database in Database::all("GC race") {
        race_on(database).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_drafts_fail_and_their_files_are_collected() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let version = model_with_file(&app, &key, "m", &[3u8; 5_000]).await;
    let (status, report) = app
        .call(Method::POST, "/api/v1/admin/gc", &app.admin_key, Some(json!({ "grace_secs": 0, "draft_ttl_secs": 0 })))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["drafts_failed"].as_u64(), report["blobs_deleted"].as_u64()), (Some(1), Some(1)), "{report}");
    let (_, body) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/m/versions/{version}"), &key, None).await;
    assert_eq!(body["status"], "failed");
    let path = format!("/api/v1/tenants/acme/models/m/versions/{version}/files/b.bin");
    assert_eq!(app.call(Method::GET, &path, &key, None).await.0, 404, "a failed version's files are gone");
    let (status, body) = app.put_file(&key, "acme", "m", version, "c.bin", vec![1], true).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "a failed draft takes no files: {body}"
    );
    assert_eq!(app.commit(&key, "acme", "m", version).await.0, 409);
    app.stop().await;
}
