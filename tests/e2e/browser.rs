//! A small W3C WebDriver client over chromedriver and headless Chromium, for the dashboard's
//! browser tests. `MODELGATE_TEST_CHROMEDRIVER` names the chromedriver binary (CI sets it);
//! `MODELGATE_TEST_CHROMIUM` the browser (default `/usr/bin/chromium`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::helpers::service_var;

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a find waits for its element to appear.
const WAIT: Duration = Duration::from_secs(10);

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser in a fresh profile, or None (with the reason printed) when no chromedriver is
    /// configured.
    pub async fn start(suite: &str) -> Option<Browser> {
        let driver_bin = service_var("MODELGATE_TEST_CHROMEDRIVER", suite)?;
        let chromium = std::env::var("MODELGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {driver_bin}: {e}"));
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if http.get(format!("{root}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("a profile folder");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let answer: Value = http
            .post(format!("{root}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let id = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {answer}"));
        let session = format!("{root}/session/{id}");
        Some(Browser { http, session, driver, _profile: profile })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.expect("chromedriver answers").json().await.expect("JSON");
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as it is now.
    pub async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_owned()
    }

    /// The elements `css` matches now.
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.post("/elements", json!({ "using": "css selector", "value": css })).await;
        found
            .as_array()
            .map(|all| all.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The first element `css` matches, waiting for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(first) = self.find_all(css).await.into_iter().next() {
                return first;
            }
            assert!(tokio::time::Instant::now() < deadline, "no {css:?} on {} within {WAIT:?}", self.url().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element `css` contains `want`; answers the whole text.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        self.wait_new_text(css, want, None).await
    }

    /// The same, and the text must differ from `old`: after a post that answers with a page
    /// like the one before it, the element may still be the old page's for a moment.
    pub async fn wait_new_text(&self, css: &str, want: &str, old: Option<&str>) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text(css).await;
            if text.contains(want) && old != Some(text.as_str()) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css:?} says {text:?}, not a new {want:?}, on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.get(&format!("/element/{element}/text")).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css).await;
        self.get(&format!("/element/{element}/attribute/{name}")).await.as_str().map(str::to_owned)
    }

    /// Types into a field (after clearing it); for a file input, `text` is the file paths, one per line.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        if self.attribute(css, "type").await.as_deref() != Some("file") {
            self.post(&format!("/element/{element}/clear"), json!({})).await;
        }
        let answer = self.post(&format!("/element/{element}/value"), json!({ "text": text })).await;
        assert!(answer.is_null(), "typing into {css:?} failed: {answer}");
    }

    pub async fn click(&self, css: &str) {
        // A part of the page that refreshes itself (runners, overview) may replace the element
        // between finding and clicking it; a stale element was not clicked, so find it again.
        // ChromeDriver reports it as a stale element, or (while it swaps the node) as an
        // "unknown error" about a node that no longer belongs to the document.
        let stale = |answer: &Value| {
            answer["error"] == "stale element reference"
                || answer["message"].as_str().is_some_and(|m| m.contains("does not belong to the document"))
        };
        for _ in 0..10 {
            let element = self.find(css).await;
            let answer = self.post(&format!("/element/{element}/click"), json!({})).await;
            if answer.is_null() {
                return;
            }
            assert!(stale(&answer), "clicking {css:?} failed: {answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("clicking {css:?}: the element went stale ten times");
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// A cookie of the current page, HttpOnly ones included.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let value = self.get(&format!("/cookie/{name}")).await;
        value["value"].as_str().map(str::to_owned)
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height })).await;
    }

    /// Saves what the window shows as `target/screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.get("/screenshot").await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a screenshot"))
            .expect("the screenshot is base64");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("a screenshot folder");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("saving a screenshot");
    }

    /// Ends the browser session (and so the browser); dropping stops chromedriver.
    pub async fn quit(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    /// On a failed test too: SIGTERM lets chromedriver close its browser before it exits.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.driver.id().to_string()).status();
        for _ in 0..20 {
            if matches!(self.driver.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
    }
}
