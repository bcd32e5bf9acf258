//! One tenant's ordinary key cannot grow the gateway's memory, database or metrics, get past
//! its storage quota, hold memory or connections with bodies it never finishes, read another
//! user's files on the host, or keep a signed-out dashboard session: each attack performed, and
//! what the server does about it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::dev_binary::{BIN, free_port};
use crate::helpers::{AppOptions, Database, TestApp, read};

const MIB: usize = 1024 * 1024;

/// `modelgate dev` in a process of its own, so that its memory is measured apart from the
/// tests running beside this one.
struct DevServer {
    child: Child,
    app: TestApp,
    dir: tempfile::TempDir,
    metrics: String,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevServer {
    async fn start(env: &[(&str, &str)]) -> DevServer {
        let dir = tempfile::tempdir().expect("temporary folder");
        let (port, metrics_port) = (free_port(), free_port());
        let child = Command::new(BIN)
            .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env("MODELGATE__METRICS__LISTEN", format!("127.0.0.1:{metrics_port}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("modelgate dev starts");
        let base = format!("http://127.0.0.1:{port}");
        let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
        let mut server = DevServer { child, app: TestApp::attached(base.clone(), String::new()), dir, metrics };
        let key_file = server.data_dir().join("admin.key");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().is_success());
            if up && let Ok(key) = std::fs::read_to_string(&key_file) {
                server.app.admin_key = key.trim().to_owned();
                return server;
            }
            assert!(Instant::now() < deadline, "modelgate dev did not start within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("modelgate-data")
    }

    /// The server's resident memory (MiB).
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("it runs");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        let kib: f64 = line.split_whitespace().nth(1).expect("a number").parse().expect("kB");
        kib / 1024.0
    }

    /// Bytes of the SQLite database and its write-ahead log.
    fn db_bytes(&self) -> u64 {
        ["modelgate.db", "modelgate.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.data_dir().join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    async fn metrics(&self) -> String {
        reqwest::get(&self.metrics).await.expect("metrics answer").text().await.expect("metrics text")
    }
}

/// Distinct bytes for each `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| ((i ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_model_names_are_metered_under_one_placeholder_and_grow_nothing() {
    let server = DevServer::start(&[]).await;
    let app = &server.app;
    let admin = app.tenant("acme").await;
    let invoker = app.key("acme", "invoker", &admin).await;
    let name = |i: usize| format!("{i:06}-{}", "x".repeat(100 * 1024));
    let call = |i: usize| {
        let body = json!({"model": name(i), "input": "hello"});
        let request = app.req(Method::POST, "/v1/embeddings", Some(&invoker)).json(&body);
        async move { read(request.send().await.expect("sent")).await }
    };
    // Warm the allocator and the connection pool, then measure.
    for i in 0..50 {
        let (status, body) = call(i).await;
        assert_eq!(status, 404, "{body}");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss_before, db_before) = (server.rss_mib(), server.db_bytes());

    let mut answers = Vec::new();
    for batch in (50..1050).collect::<Vec<_>>().chunks(16) {
        answers.extend(futures::future::join_all(batch.iter().map(|&i| call(i))).await);
    }
    for (status, body) in &answers {
        assert_eq!(*status, 404, "{body}");
        assert_eq!(body["error"]["code"], "model_not_found", "{body}");
        let message = body["error"]["message"].as_str().expect("a message");
        assert!(message.len() < 300, "the answer does not echo 100 kB: {} bytes", message.len());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a usage flush
    let (rss_after, db_after) = (server.rss_mib(), server.db_bytes());
    let metrics = server.metrics().await;
    eprintln!(
        "1,000 unknown 100 kB names: RSS {rss_before:.0} -> {rss_after:.0} MiB, database {db_before} -> {db_after} \
         bytes, /metrics {} bytes",
        metrics.len()
    );
    assert!(rss_after - rss_before < 64.0, "RSS grew {:.0} MiB", rss_after - rss_before);
    assert!(db_after.saturating_sub(db_before) < 20 * MIB as u64, "database grew {} bytes", db_after - db_before);
    assert!(metrics.len() < MIB, "/metrics is {} bytes", metrics.len());
    assert!(!metrics.contains("xxxxxxxx"), "no made-up name is a label");
    assert!(metrics.contains(r#"model="(unresolved)""#), "{metrics}");

    // Usage counts every request, under the one placeholder.
    let (status, usage) =
        app.call(Method::GET, "/api/v1/tenants/acme/usage?step=minute&group_by=model", &admin, None).await;
    assert_eq!(status, 200, "{usage}");
    let rows = usage["data"].as_array().expect("data");
    assert!(rows.iter().all(|p| p["model"] == "(unresolved)"), "{usage}");
    let requests: i64 = rows.iter().map(|p| p["requests"].as_i64().unwrap_or(0)).sum();
    assert_eq!(requests, 1050);

    // A made-up method is one series too, whatever its name.
    let method = Method::from_bytes("X".repeat(2000).as_bytes()).expect("a token");
    let _ = app.req(method, "/v1/models", Some(&invoker)).send().await.expect("answered");
    let metrics = server.metrics().await;
    assert!(!metrics.contains("XXXXXXXX"), "no made-up method is a label");
    assert!(metrics.contains(r#"method="other""#));
}

#[tokio::test(flavor = "multi_thread")]
async fn open_upload_sessions_hold_their_size_against_the_storage_quota() {
    for database in Database::all("upload sessions against the quota") {
        sessions_against_the_quota(database).await;
    }
}

async fn sessions_against_the_quota(database: Database) {
    let app = TestApp::spawn(AppOptions::new(database)).await;
    let key = app.tenant("acme").await;
    let quota = "/api/v1/tenants/acme/quotas";
    let (status, body) = app.call(Method::PUT, quota, &app.admin_key, Some(json!({"storage_bytes": 20 * MIB}))).await;
    assert_eq!(status, 200, "{body}");
    let version = app.draft(&key, "big").await;
    let uploads = format!("/api/v1/tenants/acme/models/big/versions/{version}/uploads");
    let files: Vec<Vec<u8>> = (0..5).map(|seed| pattern(19 * MIB, seed)).collect();

    // Five 19 MiB sessions at once against 20 MiB: one holds the room, four are refused.
    let starts = files.iter().enumerate().map(|(i, data)| {
        let body = json!({"path": format!("part-{i}.bin"), "size": data.len(), "sha256": hex::encode(sha2::Sha256::digest(data)), "chunk_size": 8 * MIB});
        app.call(Method::POST, &uploads, &key, Some(body))
    });
    let started = futures::future::join_all(starts).await;
    let open: Vec<usize> = (0..5).filter(|&i| started[i].0 == 201).collect();
    assert_eq!(open.len(), 1, "{started:?}");
    for (status, body) in started.iter().filter(|(s, _)| *s != 201) {
        assert_eq!((*status, body["error"]["code"].as_str()), (413, Some("storage_quota_exceeded")), "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains("open upload sessions hold"), "{body}");
    }
    let (_, listed) = app.call(Method::GET, &uploads, &key, None).await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "the refused sessions left nothing: {listed}");
    let (_, usage) = app.call(Method::GET, quota, &key, None).await;
    assert_eq!((usage["used_bytes"].as_u64(), usage["reserved_bytes"].as_u64()), (Some(0), Some(19 * MIB as u64)));

    // A plain upload cannot take the held room either.
    let (status, body) = app.put_file(&key, "acme", "big", version, "small.bin", pattern(2 * MIB, 9), true).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("storage_quota_exceeded")), "{body}");

    // The open session completes.
    let (i, session) = (open[0], &started[open[0]].1);
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    for (n, chunk) in files[i].chunks(8 * MIB).enumerate() {
        let response = app.req(Method::PUT, &format!("{base}/chunks/{n}"), Some(&key)).body(chunk.to_vec());
        let (status, body) = read(response.send().await.expect("sent")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!(status, 201, "{body}");
    let (_, usage) = app.call(Method::GET, quota, &key, None).await;
    assert_eq!(usage["used_bytes"].as_u64(), Some(19 * MIB as u64), "{usage}");
    assert_eq!(usage["reserved_bytes"].as_u64(), Some(0), "the session ended: {usage}");

    // Completing checks again: a session opened, then the quota lowered under it.
    let (status, _) = app.call(Method::PUT, quota, &app.admin_key, Some(json!({"storage_bytes": 40 * MIB}))).await;
    assert_eq!(status, 200);
    let data = &files[(i + 1) % 5];
    let body = json!({"path": "late.bin", "size": data.len(), "sha256": hex::encode(sha2::Sha256::digest(data)), "chunk_size": 8 * MIB});
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));
    for (n, chunk) in data.chunks(8 * MIB).enumerate() {
        let response = app.req(Method::PUT, &format!("{base}/chunks/{n}"), Some(&key)).body(chunk.to_vec());
        assert_eq!(read(response.send().await.expect("sent")).await.0, 200);
    }
    let (status, _) = app.call(Method::PUT, quota, &app.admin_key, Some(json!({"storage_bytes": 20 * MIB}))).await;
    assert_eq!(status, 200);
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("storage_quota_exceeded")), "{body}");
    let (_, usage) = app.call(Method::GET, quota, &key, None).await;
    assert_eq!(usage["used_bytes"].as_u64(), Some(19 * MIB as u64), "nothing more stored: {usage}");
    let (_, files_now) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/big/versions/{version}"), &key, None).await;
    assert_eq!(files_now["files"].as_array().map(Vec::len), Some(1), "{files_now}");
    app.stop().await;
}

/// Sends `head` and `body_part` on a fresh connection, then nothing more; answers what the
/// server sent, whether it closed the connection within `wait` of its last bytes (or of its
/// answer's headers), and how long that took.
async fn stall(addr: &str, head: String, body_part: &[u8], wait: Duration) -> (String, bool, Duration) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connects");
    socket.write_all(head.as_bytes()).await.expect("head sent");
    socket.write_all(body_part).await.expect("part sent");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        // Until the answer's headers are in, wait as long as a loaded machine may take.
        let answered = answer.windows(4).any(|w| w == b"\r\n\r\n");
        let limit = if answered { wait } else { Duration::from_secs(20) };
        match tokio::time::timeout(limit, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed, started.elapsed())
}

fn put_head(app: &TestApp, path: &str, key: &str, length: usize, extra: &str) -> (String, String) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\n{extra}\r\n"
    );
    (addr, head)
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_chunk_bodies_time_out_and_chunks_past_the_budget_are_refused() {
    // One tenant: at most 64 MiB of chunks at once.
    let server = DevServer::start(&[
        ("MODELGATE__GATEWAY__BODY_IDLE_TIMEOUT_SECS", "1"),
        ("MODELGATE__GATEWAY__CHUNK_BUFFER_MIB", "64"),
    ])
    .await;
    let app = &server.app;
    let key = app.tenant("acme").await;
    let version = app.draft(&key, "big").await;
    let uploads = format!("/api/v1/tenants/acme/models/big/versions/{version}/uploads");
    let data = pattern(160 * MIB, 1);
    let body = json!({"path": "w.bin", "size": data.len(), "sha256": hex::encode(sha2::Sha256::digest(&data)), "chunk_size": 32 * MIB});
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let base = format!("{uploads}/{}", session["id"].as_str().expect("id"));

    // Two 32 MiB chunks sent halfway, then stalled, hold the tenant's 64 MiB.
    let rss_before = server.rss_mib();
    let stalled: Vec<_> = (0..2)
        .map(|n| {
            let (addr, head) = put_head(app, &format!("{base}/chunks/{n}"), &key, 32 * MIB, "");
            let part = data[n * 32 * MIB..n * 32 * MIB + 16 * MIB].to_vec();
            tokio::spawn(async move { stall(&addr, head, &part, Duration::from_secs(10)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile, fourteen more connections: each refused before its body is read.
    let refused: Vec<_> = (2..16)
        .map(|n| {
            let (addr, head) = put_head(app, &format!("{base}/chunks/{}", n % 5), &key, 32 * MIB, "");
            tokio::spawn(async move { stall(&addr, head, &[0u8; 1024], Duration::from_secs(5)).await })
        })
        .collect();
    for task in refused {
        let (answer, closed, _) = task.await.expect("joined");
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(answer.contains("too_many_chunks") && answer.to_lowercase().contains("retry-after"), "{answer}");
        assert!(closed, "a refused chunk's connection is closed, its body unread");
    }
    let rss_peak = server.rss_mib();
    for task in stalled {
        let (answer, closed, took) = task.await.expect("joined");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
        assert!(answer.to_lowercase().contains("connection: close"), "{answer}");
        assert!(closed && took < Duration::from_secs(5), "ended after {took:?}");
    }
    eprintln!("16 stalled 32 MiB chunks: RSS {rss_before:.0} -> {rss_peak:.0} MiB at the peak");
    assert!(rss_peak - rss_before < 100.0, "RSS grew {:.0} MiB", rss_peak - rss_before);

    // The stalled chunks were dropped and their room given back: every chunk now goes in.
    let (_, state) = app.call(Method::GET, &base, &key, None).await;
    assert_eq!(state["received"], json!([]), "{state}");
    for (n, chunk) in data.chunks(32 * MIB).enumerate() {
        let response = app.req(Method::PUT, &format!("{base}/chunks/{n}"), Some(&key)).body(chunk.to_vec());
        let (status, body) = read(response.send().await.expect("sent")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = app.call(Method::POST, &format!("{base}/complete"), &key, None).await;
    assert_eq!(status, 201, "{body}");

    // A whole-file upload that stalls ends the same way.
    let next = app.new_version(&key, "acme", "big").await;
    let path = format!("/api/v1/tenants/acme/models/big/versions/{next}/files/stalled.bin");
    let (addr, head) = put_head(app, &path, &key, 8 * MIB, "");
    let (answer, closed, took) = stall(&addr, head, &[1u8; 4096], Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408") && closed && took < Duration::from_secs(5), "{answer} {took:?}");

    // So does any other body, here an inference request's JSON.
    let invoker = app.key("acme", "invoker", &key).await;
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {invoker}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        8 * MIB
    );
    let (answer, closed, took) = stall(&addr, head, br#"{"model": "big", "input": ["#, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"), "{answer}");
    assert!(closed && took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_before_the_body_is_read_closes_the_connection() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let key = app.tenant("acme").await;
    let quota = "/api/v1/tenants/acme/quotas";
    assert_eq!(app.call(Method::PUT, quota, &app.admin_key, Some(json!({"storage_bytes": MIB}))).await.0, 200);
    let version = app.draft(&key, "big").await;
    let path = format!("/api/v1/tenants/acme/models/big/versions/{version}/files/big.bin");

    // 64 MiB declared against a 1 MiB quota: refused by its length, the body never read.
    let (addr, head) = put_head(&app, &path, &key, 64 * MIB, "");
    let (answer, closed, took) = stall(&addr, head, &[0u8; 1024], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("storage_quota_exceeded"), "{answer}");
    assert!(answer.to_lowercase().contains("connection: close"), "{answer}");
    assert!(closed && took < Duration::from_secs(3), "the server closed the connection ({took:?})");

    // So is a body sent with a bad credential.
    let (addr, head) = put_head(&app, &path, "mg_nope_nope", 64 * MIB, "");
    let (answer, closed, _) = stall(&addr, head, &[0u8; 1024], Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401") && closed, "{answer}");

    // An error answered after the whole body was read keeps the connection.
    let invoker = app.key("acme", "invoker", &key).await;
    let json = br#"{"model": "nope", "input": "hi"}"#;
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {invoker}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    let (answer, closed, _) = stall(&addr, head, json, Duration::from_secs(1)).await;
    assert!(answer.starts_with("HTTP/1.1 404") && !closed, "{answer}");

    // A success keeps the connection for the next request.
    let (addr, head) = put_head(&app, &format!("{path}.small"), &key, 4, "");
    let (answer, closed, _) = stall(&addr, head, b"abcd", Duration::from_secs(1)).await;
    assert!(answer.starts_with("HTTP/1.1 201") && !closed, "{answer}");
}

/// The permission bits of everything under `dir` that are open to the group or others.
fn open_to_others(dir: &std::path::Path, found: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt as _;
    for entry in std::fs::read_dir(dir).expect("readable") {
        let entry = entry.expect("an entry");
        let meta = entry.metadata().expect("metadata");
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode & 0o077 != 0 || (meta.is_dir() && mode != want) {
            found.push(format!("{} {mode:o}", entry.path().display()));
        }
        if meta.is_dir() {
            open_to_others(&entry.path(), found);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_folder_database_blobs_and_cache_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    let (status, body) = app.embed(&key, "tiny", json!("fills the artifact cache")).await;
    assert_eq!(status, 200, "{body}");
    let version = app.draft(&key, "other").await;
    let uploads = format!("/api/v1/tenants/acme/models/other/versions/{version}/uploads");
    let data = pattern(6 * MIB, 3);
    let body = json!({"path": "w.bin", "size": data.len(), "sha256": hex::encode(sha2::Sha256::digest(&data))});
    let (status, session) = app.call(Method::POST, &uploads, &key, Some(body)).await;
    assert_eq!(status, 201, "{session}");
    let chunk = format!("{uploads}/{}/chunks/0", session["id"].as_str().expect("id"));
    let response = app.req(Method::PUT, &chunk, Some(&key)).body(data.clone());
    assert_eq!(read(response.send().await.expect("sent")).await.0, 200);

    let data_dir = app.data_dir();
    assert_eq!(std::fs::metadata(data_dir).expect("exists").permissions().mode() & 0o777, 0o700);
    for file in ["modelgate.db", "admin.key"] {
        let mode = std::fs::metadata(data_dir.join(file)).expect(file).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let mut found = Vec::new();
    open_to_others(data_dir, &mut found);
    assert!(found.is_empty(), "open to others: {found:#?}");
    let blobs = walk_files(&data_dir.join("blobs"));
    assert!(blobs.iter().any(|p| p.contains("/blobs/sha256/")), "blobs were written: {blobs:?}");
    assert!(blobs.iter().any(|p| p.contains("/sessions/")), "a chunk was written: {blobs:?}");
}

fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().is_dir() {
            out.extend(walk_files(&entry.path()));
        } else {
            out.push(entry.path().display().to_string());
        }
    }
    out
}

/// Posts a url-encoded form to a dashboard path, with the session cookie when given; redirects
/// are not followed.
async fn post_form(app: &TestApp, path: &str, session: Option<&str>, form: String) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let mut request = client.post(format!("{}{path}", app.base));
    if let Some(token) = session {
        request = request.header("cookie", format!("mg_session={token}"));
    }
    request.header("content-type", "application/x-www-form-urlencoded").body(form).send().await.expect("sent")
}

/// Signs in with `key`; answers the session cookie's token.
async fn sign_in(app: &TestApp, key: &str) -> String {
    let response = post_form(app, "/admin/login", None, format!("key={key}&next=%2Fadmin")).await;
    assert_eq!(response.status(), 303);
    let cookie = response.headers().get("set-cookie").expect("a session cookie").to_str().expect("text").to_owned();
    let token = cookie.strip_prefix("mg_session=").expect("the session cookie").split(';').next().expect("a value");
    token.to_owned()
}

async fn page(app: &TestApp, token: &str) -> (u16, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response =
        client.get(format!("{}/admin", app.base)).header("cookie", format!("mg_session={token}")).send().await;
    let response = response.expect("sent");
    let location = response.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("").to_owned();
    (response.status().as_u16(), location)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_out_session_is_dead_and_session_tokens_are_not_api_credentials() {
    for database in Database::all("dashboard sessions") {
        let app = TestApp::spawn(AppOptions::new(database)).await;
        let admin = app.tenant("acme").await;
        let token = sign_in(&app, &admin).await;
        assert_eq!(page(&app, &token).await.0, 200, "the session works as the /admin cookie");

        // As an API bearer token it is refused, though it is a valid token of this gateway.
        let (status, body) = app.call(Method::GET, "/api/v1/tenants/acme/models", &token, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains("dashboard session"), "{body}");
        let (status, _) = app.call(Method::GET, "/v1/models", &token, None).await;
        assert_eq!(status, 401);
        // A token from the API still works there.
        let (status, issued) = app.call(Method::POST, "/api/v1/auth/token", &admin, None).await;
        assert_eq!(status, 200, "{issued}");
        let api_token = issued["token"].as_str().expect("a token").to_owned();
        assert_eq!(app.call(Method::GET, "/api/v1/tenants/acme/models", &api_token, None).await.0, 200);

        // Signing out revokes the session: a copy of its cookie kept elsewhere is dead too.
        let payload = token.split('.').nth(1).expect("a JWT");
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"),
        )
        .expect("claims");
        let sid = claims["sid"].as_str().expect("a session id").to_owned();
        let out = post_form(&app, "/admin/logout", Some(&token), format!("csrf={sid}")).await;
        assert_eq!(out.status(), 303);
        let (status, location) = page(&app, &token).await;
        assert_eq!(status, 303);
        assert!(location.starts_with("/admin/login"), "{location}");
        let second = app.second_gateway().await;
        assert_eq!(page(&second, &token).await.0, 303, "signed out on every gateway");
        // Another session of the same key is unaffected.
        let fresh = sign_in(&app, &admin).await;
        assert_eq!(page(&app, &fresh).await.0, 200);
        second.stop().await;
        app.stop().await;
    }
}
