//! `/metrics` after a small workload: the series an operator graphs and alerts on carry the
//! workload's counts, and every `modelgate_` family is documented in docs/OPERATIONS.md.
//! Other tests may share this process (`cargo test` runs them as threads of one), so exact
//! counts are read only from series labelled with this test's own tenant.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{AppOptions, Database, TestApp, files_of};

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_workload_and_every_family_is_documented() {
    let app = TestApp::spawn(AppOptions::new(Database::Sqlite)).await;
    let admin = app.tenant("metered").await;
    let dir = app.dir.path().join("tiny");
    crate::tiny_bert::write(&dir);
    app.upload_model(&admin, "metered", "tiny", &dir).await;
    let invoker = app.key("metered", "invoker", &admin).await;
    for text in ["one", "two words", "three more words"] {
        let (status, body) = app.embed(&invoker, "tiny@1", json!(text)).await;
        assert_eq!(status, 200, "{body}");
    }
    let tight = app.tenant("metered-tight").await;
    let quotas = json!({"requests_per_minute": 1});
    assert_eq!(
        app.call(Method::PUT, "/api/v1/tenants/metered-tight/quotas", &app.admin_key, Some(quotas)).await.0,
        200
    );
    let caller = app.key("metered-tight", "invoker", &tight).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the key cache's lifetime
    // The tenant's one request of this minute may be used up already (by creating the key).
    let mut refused = 0;
    for _ in 0..2 {
        match app.call(Method::GET, "/v1/models", &caller, None).await.0 {
            200 => {}
            429 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused >= 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // a status poll or two

    let text = app.metrics().await;
    assert_eq!(app.metrics_health().await, 200, "the metrics port answers the runner's liveness probe");
    let m = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    let tiny = [("tenant", "metered"), ("model", "tiny"), ("version", "1"), ("outcome", "ok")];
    assert_eq!(m("modelgate_inference_requests_total", &tiny), 3.0);
    assert_eq!(m("modelgate_inference_request_duration_seconds_count", &tiny), 3.0);
    let embeddings = [("method", "POST"), ("route", "/v1/embeddings"), ("status", "200")];
    assert!(m("modelgate_http_requests_total", &embeddings) >= 3.0);
    let rejected =
        m("modelgate_limit_rejections_total", &[("tenant", "metered-tight"), ("limit", "requests_per_minute")]);
    assert!(rejected >= f64::from(refused), "{rejected} rejections counted, {refused} seen");
    assert!(m("modelgate_http_requests_total", &[("route", "/v1/models"), ("status", "429")]) >= f64::from(refused));
    let uploaded: u64 = files_of(&dir).iter().map(|(_, p)| std::fs::metadata(p).expect("a file").len()).sum();
    assert_eq!(m("modelgate_upload_bytes_total", &[("tenant", "metered")]), uploaded as f64);
    let store = "modelgate_object_store_request_duration_seconds_count";
    assert!(m(store, &[("op", "put"), ("outcome", "ok")]) + m(store, &[("op", "put_multipart")]) >= 1.0, "{text}");
    assert!(m(store, &[("op", "get"), ("outcome", "ok")]) >= 1.0, "the runner fetched the files");
    assert!(m("modelgate_db_pool_max_connections", &[]) >= 1.0);
    assert!(text.contains("modelgate_db_pool_connections{state=\"idle\"}"));

    let model = [("model", "metered/tiny@1")];
    assert_eq!(m("modelgate_runner_model_load_duration_seconds_count", &model), 1.0);
    assert_eq!(m("modelgate_runner_queue_duration_seconds_count", &model), 3.0);
    assert!(m("modelgate_runner_compute_duration_seconds_count", &model) >= 1.0);
    assert_eq!(m("modelgate_runner_batch_inputs_sum", &model), 3.0, "three inputs went through batches");
    assert!(m("modelgate_runner_cache_misses_total", &[]) >= 1.0);
    assert!(m("modelgate_runner_cache_hits_total", &[]) >= 2.0);
    assert!(m("modelgate_runner_memory_used_bytes", &[]) > 0.0);
    assert!(m("modelgate_runner_memory_budget_bytes", &[]) > 0.0);
    assert!(m("modelgate_gateway_runner_up", &[]) >= 1.0);
    assert!(m("process_resident_memory_bytes", &[]) > 0.0);

    let docs = include_str!("../../docs/OPERATIONS.md");
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()) {
        if family.starts_with("modelgate_") {
            assert!(docs.contains(&format!("`{family}`")), "{family} is not documented in docs/OPERATIONS.md");
        }
    }
    app.stop().await;
}

/// `dev` starts while another process holds the default metrics port: it serves /metrics on
/// a free loopback port and prints where; /metrics is never on the API's port; a configured
/// metrics port that is taken stops the start with an error naming it.
#[tokio::test(flavor = "multi_thread")]
async fn dev_starts_beside_a_busy_metrics_port_and_a_configured_busy_one_is_named() {
    use std::process::{Command, Stdio};
    // Held here, or already held by another process: either way 9464 is busy.
    let _default = std::net::TcpListener::bind("127.0.0.1:9464");
    let dir = tempfile::tempdir().expect("temporary folder");
    let port = crate::dev_binary::free_port();
    let mut child = Command::new(crate::dev_binary::BIN)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("MODELGATE__METRICS__LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dev starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.starts_with("metrics at ") => break line,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("dev printed no metrics address: {e}");
            }
        }
    };
    let url = line.trim_start_matches("metrics at ").to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && !url.contains(":9464/"), "{url}");
    let scraped = reqwest::get(&url).await.expect("scraped");
    let body = scraped.text().await.expect("text");
    assert!(body.contains("modelgate_"), "the printed address serves the metrics");
    let api = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.expect("answered");
    assert_eq!(api.status(), 404, "the API's port has no /metrics");
    let _ = child.kill();
    let _ = child.wait();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let taken = taken.local_addr().expect("its address");
    let dir = tempfile::tempdir().expect("temporary folder");
    let out = Command::new(crate::dev_binary::BIN)
        .args(["serve", "--role", "runner", "--data-dir"])
        .arg(dir.path())
        .env("MODELGATE__RUNNER__LISTEN", format!("127.0.0.1:{}", crate::dev_binary::free_port()))
        .env("MODELGATE__METRICS__LISTEN", taken.to_string())
        .env("RUST_LOG", "off")
        .output()
        .expect("serve ran");
    assert!(!out.status.success(), "a taken metrics port stops the start");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&taken.to_string()), "the error names the address: {said}");
}
