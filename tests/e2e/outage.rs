//! The object store goes away during uploads and cold loads (moto behind a TCP proxy of the
//! test's, which is stopped, connections and all, and started again): clear 503s within
//! seconds, no version half-committed; when it is back, the same processes upload, commit and
//! serve again without a restart.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::helpers::{TestApp, files_of, s3_options};
use crate::tiny_bert;

/// Forwards 127.0.0.1:`port` to `target` until stopped; stopping drops every connection.
struct Proxy {
    port: u16,
    target: String,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(port: u16, target: &str) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the proxy's port");
        let port = listener.local_addr().expect("addr").port();
        let to = target.to_owned();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = to.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, target: target.to_owned(), task: Some(task) }
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn restart(&mut self) {
        self.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        *self = Proxy::start(self.port, &self.target).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_store_outage_answers_503_and_recovery_needs_no_restart() {
    let Some(mut options) = s3_options("the object-store outage").await else { return };
    let moto = options.storage_endpoint.clone().expect("moto's endpoint");
    let mut proxy = Proxy::start(0, moto.trim_start_matches("http://")).await;
    options.storage_endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    let app = TestApp::spawn(options).await;
    let key = app.tenant("acme").await;
    let dir = app.dir.path().join("tiny");
    tiny_bert::write(&dir);
    app.upload_model(&key, "acme", "tiny", &dir).await;

    proxy.stop();

    // An upload: 503 with Retry-After, in seconds, not minutes; the draft stays a draft.
    let draft = app.new_version(&key, "acme", "tiny").await;
    let (name, path) = files_of(&dir).into_iter().next().expect("a file");
    let started = Instant::now();
    let response = app
        .req(Method::PUT, &format!("/api/v1/tenants/acme/models/tiny/versions/{draft}/files/{name}"), Some(&key))
        .body(std::fs::read(&path).expect("the file"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 503, "{:?}", response.text().await);
    assert!(started.elapsed() < Duration::from_secs(15), "the outage answered after {:?}", started.elapsed());
    let (status, _) = app.commit(&key, "acme", "tiny", draft).await;
    assert_ne!(status, 200, "a version without its files is not committed");
    let (_, version) =
        app.call(Method::GET, &format!("/api/v1/tenants/acme/models/tiny/versions/{draft}"), &key, None).await;
    assert_eq!(version["status"], "draft");

    // A cold load (v1 was never loaded): 503 as well.
    let invoker = app.key("acme", "invoker", &key).await;
    let started = Instant::now();
    let (status, body) = app.embed(&invoker, "tiny@1", json!("hello")).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(15), "the cold load answered after {:?}", started.elapsed());

    // Back: the same processes finish the draft and serve, once the runner's circuit closes.
    proxy.restart().await;
    let bytes = std::fs::read(&path).expect("the file");
    let (status, body) = app.put_file(&key, "acme", "tiny", draft, &name, bytes, true).await;
    assert_eq!(status, 201, "{body}");
    let version = app.upload_version_again(&key, "tiny", &dir).await;
    let reference = format!("tiny@{version}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.embed(&invoker, &reference, json!("hello again")).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "serving did not recover: {status} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, body) = app.embed(&invoker, "tiny@1", json!("the version the outage kept from loading")).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}
