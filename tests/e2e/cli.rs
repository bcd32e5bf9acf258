//! The command line against a running gateway: pull (verified), models ls, versions ls, alias set.

use std::process::Command;

use sha2::Digest as _;

use crate::helpers::{AppOptions, Database, TestApp, files_of};
use crate::tiny_bert;

fn modelgate(app: &TestApp, key: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(args)
        .env("MODELGATE_URL", &app.base)
        .env("MODELGATE_KEY", key)
        .output()
        .expect("modelgate runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "modelgate {args:?} failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_pulls_lists_and_moves_aliases() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, dir) = app.acme_with_tiny_model().await;
    app.upload_version_again(&key, "tiny", &dir).await;
    let base = app.dir.path().to_path_buf();
    let (app, key) = (std::sync::Arc::new(app), key);

    let run = |args: Vec<String>| {
        let (app, key) = (app.clone(), key.clone());
        tokio::task::spawn_blocking(move || modelgate(&app, &key, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let out = run(vec!["alias".into(), "set".into(), "acme/tiny".into(), "production".into(), "1".into()])
        .await
        .expect("ran");
    assert_eq!(out.trim(), "acme/tiny:production -> 1");

    for (source, folder) in
        [("acme/tiny:production", "by-alias"), ("acme/tiny@2", "by-number"), ("acme/tiny", "newest")]
    {
        let target = base.join(folder);
        let out = run(vec!["pull".into(), source.into(), target.display().to_string()]).await.expect("ran");
        assert!(out.contains("pulled acme/tiny@"), "{out}");
        for (relative, original) in files_of(&dir) {
            let pulled = std::fs::read(target.join(&relative)).unwrap_or_else(|e| panic!("{source}: {relative}: {e}"));
            assert!(pulled == std::fs::read(&original).expect("original"), "{source}: {relative} is byte-identical");
        }
    }

    let out = run(vec!["models".into(), "ls".into(), "acme".into()]).await.expect("ran");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[1].starts_with("tiny ") && lines[1].contains("embedding"), "{out}");
    let out = run(vec!["versions".into(), "ls".into(), "acme/tiny".into()]).await.expect("ran");
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows.iter().map(|r| (r[0], r[1], r[2])).collect::<Vec<_>>(),
        [("1", "ready", "bert"), ("2", "ready", "bert")],
        "{out}"
    );
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_continues_an_interrupted_draft_and_sends_big_files_in_chunks() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    std::fs::create_dir_all(dir.join("extra")).expect("folder");
    const CHUNK: usize = 5 * 1024 * 1024;
    let big: Vec<u8> = (0..(3 * CHUNK + 123) as u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.join("extra/big.bin"), &big).expect("big file");
    // An earlier run got as far as creating the draft and sending config.json.
    let body = serde_json::json!({"name": "tiny", "task": "embedding"});
    assert_eq!(app.call(reqwest::Method::POST, "/api/v1/tenants/acme/models", &key, Some(body)).await.0, 201);
    let version = app.new_version(&key, "acme", "tiny").await;
    let config = std::fs::read(dir.join("config.json")).expect("config");
    assert_eq!(app.put_file(&key, "acme", "tiny", version, "config.json", config, true).await.0, 201);
    // ... and had sent the second chunk of big.bin when it was cut off.
    let uploads = format!("/api/v1/tenants/acme/models/tiny/versions/{version}/uploads");
    let sha256 = hex::encode(sha2::Sha256::digest(&big));
    let start = serde_json::json!({"path": "extra/big.bin", "size": big.len(), "sha256": sha256, "chunk_size": CHUNK});
    let (status, session) = app.call(reqwest::Method::POST, &uploads, &key, Some(start)).await;
    assert_eq!(status, 201, "{session}");
    let chunk = format!("{uploads}/{}/chunks/1", session["id"].as_str().expect("id"));
    let sent = app.req(reqwest::Method::PUT, &chunk, Some(&key)).body(big[CHUNK..2 * CHUNK].to_vec()).send().await;
    assert_eq!(sent.expect("sent").status(), 200);

    let (base, target) = (app.base.clone(), dir.display().to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_modelgate"))
            .args([
                "push",
                &target,
                "acme/tiny",
                "--chunked-above",
                "5242880",
                "--chunk-size",
                "8388608",
                "--alias",
                "production",
            ])
            .env("MODELGATE_URL", base)
            .env("MODELGATE_KEY", key.clone())
            .output()
            .expect("modelgate runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "push failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("pushed acme/tiny@{version}")), "the draft is continued, not replaced: {stdout}");
    assert!(stdout.contains("(1 already there)"), "config.json is not sent again: {stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resuming extra/big.bin: 1 of 4 chunks already there"), "the session is resumed: {stderr}");
    let key = app.key("acme", "viewer", &app.admin_key).await;
    let path = format!("/api/v1/tenants/acme/models/tiny/versions/{version}/files/extra/big.bin");
    let response = app.req(reqwest::Method::GET, &path, Some(&key)).send().await.expect("sent");
    assert!(response.bytes().await.expect("body").as_ref() == big.as_slice(), "the chunked file arrived whole");
    let (_, body) = app.call(reqwest::Method::GET, "/api/v1/tenants/acme/models/tiny", &key, None).await;
    assert_eq!(body["aliases"][0]["version"], version);
    app.stop().await;
}
