//! One gateway over runner processes: a version sticks to the runner that has it, a cold
//! version goes where there is room, a runner killed with SIGKILL under traffic costs at most
//! the requests in flight on it (not replayed: the version alone in flight is quarantined,
//! see containment.rs) and is used again once it is back, a hot version gets a
//! second copy that goes when traffic drops, runners are found through DNS, the request id
//! and trace reach the runner's logs, and a call past its kind's timeout answers 504.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::v1::StatusRequest;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp};
use crate::tiny_bert;

const BIN: &str = env!("CARGO_BIN_EXE_modelgate");

/// `modelgate serve --role runner` in a process of its own.
pub(crate) struct RunnerProcess {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
    storage_url: String,
    budget: u64,
    /// Its address space, set with prlimit, if limited.
    address_space: Option<u64>,
}

impl RunnerProcess {
    pub(crate) async fn start(storage_url: &str, budget: u64) -> Self {
        Self::start_limited(storage_url, budget, None).await
    }

    /// A runner whose address space prlimit limits to `address_space` bytes, when given.
    pub(crate) async fn start_limited(storage_url: &str, budget: u64, address_space: Option<u64>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let data = tempfile::tempdir().expect("temporary folder");
        let child = Self::spawn(port, data.path(), storage_url, budget, address_space);
        let runner = Self { child, port, data, storage_url: storage_url.to_owned(), budget, address_space };
        runner.wait_ready().await;
        runner
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Logs JSON lines to `runner.log` in its data folder.
    fn spawn(port: u16, data: &std::path::Path, storage_url: &str, budget: u64, address_space: Option<u64>) -> Child {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(data.join("runner.log")).expect("log file");
        let mut command = match address_space {
            Some(bytes) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--as={bytes}")).arg("--").arg(BIN);
                prlimit
            }
            None => Command::new(BIN),
        };
        command
            .args(["serve", "--role", "runner", "--data-dir"])
            .arg(data)
            .env("MODELGATE__RUNNER__LISTEN", format!("127.0.0.1:{port}"))
            .env("MODELGATE__RUNNER__MEMORY_BUDGET_BYTES", budget.to_string())
            .env("MODELGATE__STORAGE__URL", storage_url)
            .env("RUST_LOG", "info")
            .env("MODELGATE__LOG__FORMAT", "json")
            .env("MODELGATE__METRICS__LISTEN", "127.0.0.1:0")
            .envs(crate::helpers::shared_certs().runner_env())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("a runner starts")
    }

    pub(crate) fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client with the gateways' certificate (the tests' shared CA).
    async fn client(
        &self,
    ) -> Result<proto::v1::runner_client::RunnerClient<tonic::transport::Channel>, tonic::transport::Error> {
        let certs = crate::helpers::shared_certs().dir();
        crate::helpers::runner_client_at(&format!("127.0.0.1:{}", self.port), &certs).await
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut client) = self.client().await
                && client.status(StatusRequest {}).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("runner {} did not start", self.address());
    }

    pub(crate) async fn status(&self) -> proto::v1::StatusResponse {
        let mut client = self.client().await.expect("runner reachable");
        client.status(StatusRequest {}).await.expect("status").into_inner()
    }

    /// Requests it answered for the model called `name`, if it has it loaded.
    async fn requests_for(&self, name: &str) -> Option<u64> {
        self.status().await.loaded.iter().find(|m| m.display_name == name).map(|m| m.requests_total)
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL sent");
        self.child.wait().expect("the runner is gone");
    }

    async fn revive(&mut self) {
        self.child = Self::spawn(self.port, self.data.path(), &self.storage_url, self.budget, self.address_space);
        self.wait_ready().await;
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn healthy_runners(app: &TestApp) -> usize {
    let (_, listed) = app.call(reqwest::Method::GET, "/api/v1/admin/runners", &app.admin_key, None).await;
    listed["data"].as_array().expect("runners").iter().filter(|r| r["healthy"] == true).count()
}

/// A poll of every runner's status has happened since.
pub(crate) async fn routing_catches_up() {
    tokio::time::sleep(Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_runners_keep_versions_where_they_are_fill_room_and_survive_a_kill() {
    let store = tempfile::tempdir().expect("temporary folder");
    let storage_url = url::Url::from_directory_path(store.path()).expect("a file URL").to_string();
    let models = tempfile::tempdir().expect("temporary folder");
    let names = ["m1", "m2", "m3"];
    for name in names {
        tiny_bert::write(&models.path().join(name));
    }
    // Each runner has room for exactly one of these models.
    let size = |file: &str| std::fs::metadata(models.path().join("m1").join(file)).expect("a model file").len();
    // What a runner counts for one: its weights, and its tokenizer.
    let budget = size("model.safetensors") + formats::tokenizer::MEMORY_PER_FILE_BYTE * size("tokenizer.json");
    let mut runners = Vec::new();
    for _ in 0..3 {
        runners.push(RunnerProcess::start(&storage_url, budget).await);
    }
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(storage_url.clone());
    options.runners = Some(runners.iter().map(RunnerProcess::address).collect());
    let app = TestApp::spawn(options).await;
    let key = app.tenant("acme").await;
    for name in names {
        app.upload_model(&key, "acme", name, &models.path().join(name)).await;
    }

    // Sticky: every request for m1 goes to the one runner that loaded it.
    for i in 0..30 {
        let (status, body) = app.embed(&key, "m1", json!(format!("the cat sat {i}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut holders = Vec::new();
    for (i, runner) in runners.iter().enumerate() {
        if let Some(requests) = runner.requests_for("acme/m1@1").await {
            holders.push((i, requests));
        }
    }
    assert_eq!(holders.len(), 1, "one runner holds m1: {holders:?}");
    let (holder, requests) = holders[0];
    assert_eq!(requests, 30, "all thirty requests went to the runner that has m1");

    // Room: with one model's room per runner, m2 and m3 each land on a runner still empty,
    // whatever their rendezvous order says, and nothing is evicted.
    for name in ["m2", "m3"] {
        routing_catches_up().await;
        assert_eq!(app.embed(&key, name, json!("hello")).await.0, 200);
    }
    let mut evictions = 0;
    for runner in &runners {
        let status = runner.status().await;
        assert_eq!(status.loaded.len(), 1, "each runner holds one model: {:?}", status.loaded);
        evictions += status.cache_evictions;
    }
    assert_eq!(evictions, 0, "cold versions went where there was room");

    // SIGKILL the runner holding m1 while four clients keep calling it. The calls in flight on
    // it fail and are not replayed; m1 was the only version in flight there, so to the gateway
    // it may have killed the runner: it is quarantined until a platform admin clears it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (base, key, stop) = (app.base.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = http
                        .post(format!("{base}/v1/embeddings"))
                        .bearer_auth(&key)
                        .json(&json!({"model": "m1", "input": format!("client {c} says hello")}))
                        .send()
                        .await
                        .expect("the gateway answers throughout");
                    match answer.status().as_u16() {
                        200 => ok += 1,
                        503 if answer.headers().contains_key("retry-after") => failed += 1,
                        503 => {
                            let (_, body) = crate::helpers::read(answer).await;
                            assert_eq!(body["error"]["code"], "version_quarantined", "{body}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("a call on the killed runner answered {other}, not 503"),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    runners[holder].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for client in clients {
        let (o, f) = client.await.expect("client task");
        ok += o;
        failed += f;
    }
    println!("kill -9 of the runner holding m1 under 4 concurrent clients: {ok} succeeded, {failed} failed");
    assert!(failed <= 4, "at most the requests in flight on the killed runner fail (503): {failed}");
    let (_, version) = app.call(reqwest::Method::GET, "/api/v1/tenants/acme/models/m1/versions/1", &key, None).await;
    let quarantine = &version["quarantine"];
    if let Some(id) = quarantine["version_id"].as_str() {
        let clear = format!("/api/v1/admin/quarantine/{id}");
        assert_eq!(app.call(reqwest::Method::DELETE, &clear, &app.admin_key, None).await.0, 200);
    } else {
        assert_eq!(failed, 0, "a call lost with the runner quarantines m1, alone in flight there: {version}");
    }
    for i in 0..10 {
        let (status, body) = app.embed(&key, "m1", json!(format!("after the kill {i}"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let moved = {
        let mut n = 0;
        for (i, runner) in runners.iter().enumerate() {
            if i != holder {
                n += runner.requests_for("acme/m1@1").await.unwrap_or(0);
            }
        }
        n
    };
    assert!(moved > 0, "m1's traffic moved to a live runner");

    // Back: the revived runner is the only one with room, so a model the others let go of
    // lands on it.
    runners[holder].revive().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while healthy_runners(&app).await < 3 {
        assert!(Instant::now() < deadline, "the gateway sees the revived runner");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in names {
        let (status, body) = app.embed(&key, name, json!("hello again")).await;
        assert_eq!(status, 200, "{name}: {body}");
        routing_catches_up().await;
    }
    let revived = runners[holder].status().await;
    assert!(!revived.loaded.is_empty(), "the revived runner serves again");
    assert_eq!(healthy_runners(&app).await, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runners_found_through_dns_serve_and_an_unreachable_address_is_avoided() {
    let store = tempfile::tempdir().expect("temporary folder");
    let storage_url = url::Url::from_directory_path(store.path()).expect("a file URL").to_string();
    let runner = RunnerProcess::start(&storage_url, 64 * 1024 * 1024).await;
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(storage_url);
    // A configured runner that is down, plus the real one found through DNS only.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    options.runners = Some(vec![format!("http://{dead}")]);
    let mut app = TestApp::spawn(options).await;
    app.config_mut().gateway.routing.dns = Some(format!("localhost:{}", runner.port));
    app.restart().await;
    let (key, _) = app.acme_with_tiny_model().await;
    routing_catches_up().await;
    for i in 0..10 {
        let (status, body) = app.embed(&key, "tiny", json!(format!("hello {i}"))).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    assert_eq!(runner.requests_for("acme/tiny@1").await, Some(10), "the runner found through DNS served them");
    let (_, listed) = app.call(reqwest::Method::GET, "/api/v1/admin/runners", &app.admin_key, None).await;
    let addresses: Vec<&str> =
        listed["data"].as_array().expect("runners").iter().filter_map(|r| r["address"].as_str()).collect();
    assert!(addresses.contains(&runner.address().as_str()), "{listed}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_id_and_trace_reach_the_runners_logs_and_come_back() {
    let store = tempfile::tempdir().expect("temporary folder");
    let storage_url = url::Url::from_directory_path(store.path()).expect("a file URL").to_string();
    let runner = RunnerProcess::start(&storage_url, 64 * 1024 * 1024).await;
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(storage_url);
    options.runners = Some(vec![runner.address()]);
    let app = TestApp::spawn(options).await;
    let (key, _) = app.acme_with_tiny_model().await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .req(reqwest::Method::POST, "/v1/embeddings", Some(&key))
        .header("x-request-id", "req-trace-test-1")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"model": "tiny", "input": "hello"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(header("x-request-id"), "req-trace-test-1");
    let traceparent = header("traceparent");
    assert!(traceparent.starts_with(&format!("00-{trace}-")), "same trace, the gateway's span: {traceparent}");

    // Without headers the gateway makes both up.
    let (status, _) = app.embed(&key, "tiny", json!("hello")).await;
    assert_eq!(status, 200);

    let log = std::fs::read_to_string(runner.data.path().join("runner.log")).expect("runner log");
    let line = log
        .lines()
        .find(|l| l.contains("req-trace-test-1"))
        .unwrap_or_else(|| panic!("the runner logged the request id:\n{log}"));
    let line: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["span"]["trace.id"], trace, "{line}");
    assert_eq!(line["span"]["rpc"], "embed", "{line}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_version_gets_a_second_copy_which_goes_once_traffic_drops() {
    let store = tempfile::tempdir().expect("temporary folder");
    let storage_url = url::Url::from_directory_path(store.path()).expect("a file URL").to_string();
    let runners = [
        RunnerProcess::start(&storage_url, 64 * 1024 * 1024).await,
        RunnerProcess::start(&storage_url, 64 * 1024 * 1024).await,
    ];
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(storage_url);
    options.runners = Some(runners.iter().map(RunnerProcess::address).collect());
    let mut app = TestApp::spawn(options).await;
    app.config_mut().gateway.routing.hot_queue = 2;
    app.config_mut().gateway.routing.replica_idle_secs = 1;
    app.restart().await;
    let (key, _) = app.acme_with_tiny_model().await;
    assert_eq!(app.embed(&key, "tiny", json!("warm up")).await.0, 200);

    // Eight clients keep more than two requests queued on the one copy.
    let inputs: Vec<String> = (0..256).map(|i| format!("the man is playing the guitar {i}")).collect();
    let until = Instant::now() + Duration::from_secs(3);
    let clients = (0..8).map(|_| {
        let (app, key, inputs) = (&app, &key, inputs.clone());
        async move {
            while Instant::now() < until {
                let (status, body) = app.embed(key, "tiny", json!(inputs)).await;
                assert_eq!(status, 200, "{body}");
            }
        }
    });
    futures::future::join_all(clients).await;
    let mut served = Vec::new();
    for runner in &runners {
        served.push(runner.requests_for("acme/tiny@1").await);
    }
    assert!(served.iter().all(|s| s.is_some_and(|n| n > 0)), "both runners hold and serve a copy: {served:?}");

    // Quiet for replica_idle_secs: one copy stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut holding = 0;
        for runner in &runners {
            holding += usize::from(runner.requests_for("acme/tiny@1").await.is_some());
        }
        if holding == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the extra copy is still loaded 10 s after traffic stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.embed(&key, "tiny", json!("still served")).await.0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_kinds_timeout_answers_504() {
    let mut app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let (key, _) = app.acme_with_tiny_model().await;
    // A first call loads the model: far longer than a millisecond.
    app.config_mut().gateway.routing.embed_timeout_ms = 1;
    app.restart().await;
    let (status, body) = app.embed(&key, "tiny", json!("hello")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("timeout")), "{body}");
    app.config_mut().gateway.routing.embed_timeout_ms = 120_000;
    app.restart().await;
    assert_eq!(app.embed(&key, "tiny", json!("hello")).await.0, 200);
    app.stop().await;
}
