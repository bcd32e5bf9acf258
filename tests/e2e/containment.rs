//! Containment: a call that takes its runner down is not replayed on another runner, and the
//! blame for a runner's death cannot be aimed at another tenant. Runners are real processes
//! behind a proxy that plays the crash: it holds back the runner's answers (so the calls the
//! test sends stay in flight), waits until the runner has received them, then resets every
//! connection, stops listening and the runner is SIGKILLed: to the gateway, exactly a runner
//! dying of the calls it was running. The proxy reads no bytes, so it works over TLS too.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::helpers::{AppOptions, Database, TestApp, read};
use crate::routing::{RunnerProcess, healthy_runners, routing_catches_up};
use crate::tiny_bert;

/// A runner process behind a crash-playing proxy; the gateway knows only the proxy.
struct CrashingRunner {
    runner: tokio::sync::Mutex<RunnerProcess>,
    address: String,
    /// True: the runner's answers are held back.
    hold: watch::Sender<bool>,
    crash: watch::Sender<bool>,
}

/// A loopback port held for a proxy, not listening yet: connections to it are refused.
struct Port {
    socket: tokio::net::TcpSocket,
    port: u16,
}

fn free_port() -> Port {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind("127.0.0.1:0".parse().expect("an address")).expect("a free port");
    let port = socket.local_addr().expect("its address").port();
    Port { socket, port }
}

impl CrashingRunner {
    async fn start(storage_url: &str, port: Port) -> Self {
        let runner = RunnerProcess::start(storage_url, 1 << 30).await;
        let upstream = runner.address().trim_start_matches("http://").to_owned();
        let Port { socket, port } = port;
        let listener = socket.listen(128).expect("the proxy listens");
        let (hold, crash) = (watch::channel(false).0, watch::channel(false).0);
        let (holding, mut crashed) = (hold.subscribe(), crash.subscribe());
        let crashing = crash.subscribe();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = crashed.wait_for(|c| *c) => return,
                };
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                tokio::spawn(connection(client, server, holding.clone(), crashing.clone()));
            }
        });
        Self { runner: tokio::sync::Mutex::new(runner), address: format!("http://127.0.0.1:{port}"), hold, crash }
    }

    fn crashed(&self) -> bool {
        *self.crash.borrow()
    }

    /// Requests of the model called `name` the runner answered, asked directly (not through
    /// the proxy).
    async fn requests_for(&self, name: &str) -> u64 {
        let status = self.runner.lock().await.status().await;
        status.loaded.iter().find(|m| m.display_name == name).map_or(0, |m| m.requests_total)
    }

    /// Holds back the runner's answers while `calls` run, and once the runner has received one
    /// more request of each of `names`, kills it; answers what `calls` answered. The gateway's
    /// connections to the runner must be made already ([`warm`]): held back, a new one's TLS
    /// handshake would not finish.
    async fn crash_during<T>(&self, names: &[&str], calls: impl std::future::Future<Output = T>) -> T {
        let mut before = Vec::new();
        for name in names {
            before.push(self.requests_for(name).await);
        }
        self.hold.send_replace(true);
        let crash = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            for (name, before) in names.iter().zip(before) {
                while self.requests_for(name).await <= before {
                    assert!(Instant::now() < deadline, "a call of {name} reached the runner");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            self.crash.send_replace(true);
            self.runner.lock().await.kill();
        };
        let (answers, ()) = tokio::join!(calls, crash);
        answers
    }
}

/// Pumps one connection both ways until the crash, which resets it; answers wait while held.
async fn connection(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut holding: watch::Receiver<bool>,
    mut crashed: watch::Receiver<bool>,
) {
    // Closing sends a reset, as the kernel does for a killed process's connections.
    let _ = client.set_zero_linger();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::io::copy(&mut client_read, &mut server_write);
    let answers = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if holding.wait_for(|held| !*held).await.is_err() || client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        () = answers => {}
        _ = crashed.wait_for(|c| *c) => {}
    }
}

fn storage_url(store: &tempfile::TempDir) -> String {
    url::Url::from_directory_path(store.path()).expect("a file URL").to_string()
}

async fn embed(app: &TestApp, key: &str, model: &str, input: &str) -> (u16, bool, Value) {
    let answer = app
        .req(Method::POST, "/v1/embeddings", Some(key))
        .json(&json!({"model": model, "input": input}))
        .send()
        .await
        .expect("the gateway answers");
    let retry_after = answer.headers().contains_key("retry-after");
    let (status, body) = read(answer).await;
    (status, retry_after, body)
}

/// Calls `model` at once from many connections, so that every HTTP worker of the gateway
/// makes its connection to the runner now (each worker thread has its own).
async fn warm(app: &TestApp, key: &str) {
    let calls = (0..32).map(|i| embed(app, key, "m", if i % 2 == 0 { "hello" } else { "the cat sat" }));
    for (status, _, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
}

async fn quarantine(app: &TestApp, key: &str, tenant: &str) -> Value {
    let path = format!("/api/v1/tenants/{tenant}/models/m/versions/1");
    let (status, version) = app.call(Method::GET, &path, key, None).await;
    assert_eq!(status, 200, "{version}");
    version["quarantine"].clone()
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

async fn wait_healthy(app: &TestApp, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthy_runners(app).await < n {
        assert!(Instant::now() < deadline, "the gateway sees {n} runners");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The listing asked the runners now; routing goes by the gateway's last poll.
    routing_catches_up().await;
}

/// One gateway over `first` (started) and the proxies of the later runners (not listening
/// yet, so the models go to `first`); tenants `evil`, `good` and `other`, each with model `m`,
/// and their admins' keys.
async fn setup(
    database: Database,
    first: &CrashingRunner,
    later: &[&Port],
    storage_url: &str,
    models: &std::path::Path,
) -> (TestApp, [String; 3]) {
    let mut options = AppOptions::new(database);
    options.storage_url = Some(storage_url.to_owned());
    let mut runners = vec![first.address.clone()];
    runners.extend(later.iter().map(|p| format!("http://127.0.0.1:{}", p.port)));
    options.runners = Some(runners);
    let app = TestApp::spawn(options).await;
    let mut admins = Vec::new();
    for tenant in ["evil", "good", "other"] {
        let key = app.tenant(tenant).await;
        app.upload_model(&key, tenant, "m", models).await;
        admins.push(key);
    }
    routing_catches_up().await;
    (app, admins.try_into().expect("three"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_kills_its_runner_alone_is_not_replayed_and_quarantines_its_version() {
    for database in Database::all("containment") {
        alone_in_flight(database).await;
    }
}

async fn alone_in_flight(database: Database) {
    let (store, models) = (tempfile::tempdir().expect("folder"), tempfile::tempdir().expect("folder"));
    tiny_bert::write(models.path());
    let url = storage_url(&store);
    let first = CrashingRunner::start(&url, free_port()).await;
    let second_port = free_port();
    let (app, [evil_admin, good_admin, _]) = setup(database, &first, &[&second_port], &url, models.path()).await;
    let evil = app.key("evil", "invoker", &evil_admin).await;
    let good = app.key("good", "invoker", &good_admin).await;
    for key in [&evil, &good] {
        warm(&app, key).await;
    }
    let second = CrashingRunner::start(&url, second_port).await;
    wait_healthy(&app, 2).await;
    // Another gateway over the same database has resolved evil's model (and cached it).
    let gateway = app.second_gateway().await;
    assert_eq!(gateway.call(Method::GET, "/v2/models/m/ready", &evil, None).await.0, 200);
    let before = app.metrics().await;

    // The first runner dies while evil's call alone is in flight on it: evil is quarantined,
    // and its call is not replayed on the second runner.
    let (status, retry_after, body) = first.crash_during(&["evil/m@1"], embed(&app, &evil, "m", "hello")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("version_quarantined")), "{body}");
    assert!(!retry_after, "waiting does not lift a quarantine: no Retry-After");
    assert_eq!(second.requests_for("evil/m@1").await, 0, "the call was not replayed on the second runner");

    // The other gateway drops its cached resolution at the quarantine's announcement.
    let deadline = Instant::now() + Duration::from_secs(1);
    while gateway.call(Method::GET, "/v2/models/m/ready", &evil, None).await.0 != 503 {
        assert!(Instant::now() < deadline, "the other gateway still has evil's model ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, body) = embed(&gateway, &evil, "m", "hello").await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("version_quarantined")), "{body}");
    gateway.stop().await;

    // The second runner serves the other tenant.
    let (status, _, body) = embed(&app, &good, "m", "hello again").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(second.requests_for("good/m@1").await, 1);

    // Every protocol refuses the quarantined version, without Retry-After.
    let (status, retry_after, body) = embed(&app, &evil, "m", "hello").await;
    assert_eq!((status, body["error"]["code"].as_str(), retry_after), (503, Some("version_quarantined"), false));
    let kserve = app
        .req(Method::POST, "/v2/models/m/infer", Some(&evil))
        .json(&json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}))
        .send()
        .await
        .expect("the gateway answers");
    assert!(!kserve.headers().contains_key("retry-after"));
    let (status, body) = read(kserve).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().is_some_and(|m| m.contains("version_quarantined")), "{body}");
    assert_eq!(app.call(Method::GET, "/v2/models/m/ready", &evil, None).await.0, 503, "not ready");
    assert_eq!(second.requests_for("evil/m@1").await, 0);

    // Its admins see why; a platform admin clears it (audited); the metric counted it.
    let q = quarantine(&app, &evil_admin, "evil").await;
    assert!(q["reason"].as_str().is_some_and(|r| r.contains("alone")), "{q}");
    assert!(q["since"].is_string() && q["strikes"] == 2, "{q}");
    assert_eq!(quarantine(&app, &good_admin, "good").await, Value::Null);
    let page = app.dashboard_page(&evil_admin, "/admin/tenants/evil/models/m/versions/1").await;
    assert!(page.contains("id=\"quarantine\"") && page.contains("alone"), "the version's page says why: {page}");
    let after = app.metrics().await;
    for name in ["modelgate_version_quarantines_total", "modelgate_version_strikes_total"] {
        assert!(counter(&after, name) >= counter(&before, name) + 1.0, "{name} counted");
    }
    let clear = format!("/api/v1/admin/quarantine/{}", q["version_id"].as_str().expect("its id"));
    assert_eq!(app.call(Method::DELETE, &clear, &evil_admin, None).await.0, 403, "platform admins only");
    let (status, cleared) = app.call(Method::DELETE, &clear, &app.admin_key, None).await;
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(app.call(Method::DELETE, &clear, &app.admin_key, None).await.0, 404, "nothing left to clear");
    let (_, audit) = app.call(Method::GET, "/api/v1/audit?action=version.quarantine*", &app.admin_key, None).await;
    let actions: Vec<&str> =
        audit["data"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"version.quarantine") && actions.contains(&"version.quarantine.clear"), "{audit}");
    assert_eq!(quarantine(&app, &evil_admin, "evil").await, Value::Null);
    let (status, _, body) = embed(&app, &evil, "m", "hello").await;
    assert_eq!(status, 200, "cleared, it is served again: {body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attackers_crash_with_a_victims_call_in_flight_does_not_quarantine_the_victim() {
    let (store, models) = (tempfile::tempdir().expect("folder"), tempfile::tempdir().expect("folder"));
    tiny_bert::write(models.path());
    let url = storage_url(&store);
    let first = CrashingRunner::start(&url, free_port()).await;
    let [second_port, third_port] = [free_port(), free_port()];
    let (app, [evil_admin, good_admin, other_admin]) =
        setup(Database::Sqlite, &first, &[&second_port, &third_port], &url, models.path()).await;
    let evil = app.key("evil", "invoker", &evil_admin).await;
    let good = app.key("good", "invoker", &good_admin).await;
    let other = app.key("other", "invoker", &other_admin).await;
    for key in [&evil, &good] {
        warm(&app, key).await;
    }

    // The first runner dies while evil's and good's calls are in flight on it: two suspects,
    // one strike each, nobody quarantined, neither call replayed.
    let (status, retry_after, body) = crash_with(&app, &first, ("good", &good), &evil).await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), retry_after),
        (503, Some("runner_unavailable"), true),
        "{body}"
    );
    assert_eq!(quarantine(&app, &good_admin, "good").await, Value::Null);
    assert_eq!(quarantine(&app, &evil_admin, "evil").await, Value::Null);

    // Within ten minutes the second runner dies with evil's and other's calls in flight:
    // present in both deaths, evil reaches two strikes and is quarantined; good and other,
    // each present once, are not.
    let second = CrashingRunner::start(&url, second_port).await;
    wait_healthy(&app, 1).await;
    warm(&app, &other).await;
    let (status, retry_after, body) = crash_with(&app, &second, ("other", &other), &evil).await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), retry_after),
        (503, Some("version_quarantined"), false),
        "{body}"
    );
    let q = quarantine(&app, &evil_admin, "evil").await;
    assert!(q["reason"].as_str().is_some_and(|r| r.contains("several")) && q["strikes"] == 2, "{q}");
    assert_eq!(quarantine(&app, &good_admin, "good").await, Value::Null);
    assert_eq!(quarantine(&app, &other_admin, "other").await, Value::Null);

    // The victims are served by the third runner.
    let third = CrashingRunner::start(&url, third_port).await;
    wait_healthy(&app, 1).await;
    for key in [&good, &other] {
        let (status, _, body) = embed(&app, key, "m", "hello").await;
        assert_eq!(status, 200, "the victims are served: {body}");
    }
    assert!(!third.crashed());
    app.stop().await;
}

/// Kills `runner` while a call of `victim` (tenant, key) and one of `evil` are in flight on it;
/// answers evil's answer, having checked the victim's: 503 `runner_unavailable` with
/// `Retry-After`, not replayed.
async fn crash_with(app: &TestApp, runner: &CrashingRunner, victim: (&str, &str), evil: &str) -> (u16, bool, Value) {
    let (tenant, key) = victim;
    let victim_model = format!("{tenant}/m@1");
    let calls = async { tokio::join!(embed(app, key, "m", "hello"), embed(app, evil, "m", "hello")) };
    let ((status, retry_after, body), answer) = runner.crash_during(&[&victim_model, "evil/m@1"], calls).await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), retry_after),
        (503, Some("runner_unavailable"), true),
        "{body}"
    );
    answer
}

/// A generation whose runner dies while it streams, alone in flight there, is judged like a
/// lost unary call: its stream ends with `version_quarantined`, and the version is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_generation_that_kills_its_runner_mid_stream_quarantines_its_version() {
    let store = tempfile::tempdir().expect("temporary folder");
    let storage_url = url::Url::from_directory_path(store.path()).expect("a file URL").to_string();
    let mut runner = RunnerProcess::start(&storage_url, 1 << 30).await;
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(storage_url);
    options.runners = Some(vec![runner.address()]);
    let app = TestApp::spawn(options).await;
    let key = app.tenant("evil").await;
    let dir = app.dir.path().join("long");
    crate::tiny_llama::write_sized(&dir, crate::tiny_llama::LONG);
    app.upload_task_model(&key, "evil", "m", "generation", &dir).await;
    routing_catches_up().await;

    let body = json!({"model": "m", "prompt": "the", "max_tokens": 4000, "temperature": 0, "stream": true});
    let mut stream = app.req(Method::POST, "/v1/completions", Some(&key)).json(&body).send().await.expect("sent");
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.expect("a chunk").expect("the stream has begun");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "), "{first:?}");
    runner.kill();
    let mut rest = String::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("version_quarantined"), "the stream ends with the verdict: {rest}");
    assert!(!quarantine(&app, &key, "evil").await.is_null(), "the version is quarantined");
    app.stop().await;
}
