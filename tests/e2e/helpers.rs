//! `TestApp`: starts the same roles the binary starts, on ephemeral ports.

use std::path::{Path, PathBuf};

use modelgate::config::Config;
use modelgate::startup::{self, Role, Running};
use reqwest::{Method, RequestBuilder, Response};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Reads an environment variable that points a suite at a service, or says why it skips.
pub fn service_var(name: &str, suite: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("SKIPPED {suite}: {name} is not set");
            None
        }
    }
}

/// SQLite and a fresh bucket on the moto S3 server, when `MODELGATE_TEST_S3_ENDPOINT` is set.
pub async fn s3_options(suite: &str) -> Option<AppOptions> {
    let endpoint = service_var("MODELGATE_TEST_S3_ENDPOINT", suite)?;
    let bucket = format!("mg-test-{}", uuid::Uuid::now_v7().simple());
    // moto creates buckets on an unsigned PUT; object_store creates none.
    let created = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.expect("moto answers");
    assert!(created.status().is_success(), "creating the bucket: {}", created.status());
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(format!("s3://{bucket}/modelgate"));
    options.storage_endpoint = Some(endpoint);
    options.storage_options = vec![
        ("aws_access_key_id".into(), "test".into()),
        ("aws_secret_access_key".into(), "test".into()),
        ("aws_region".into(), "us-east-1".into()),
    ];
    Some(options)
}

/// SQLite and a fresh prefix in an Azurite container (created beforehand, see .ci/run), when
/// `MODELGATE_TEST_AZURITE_CONTAINER` is set; Azurite's well-known account is used.
pub fn azure_options(suite: &str) -> Option<AppOptions> {
    let container = service_var("MODELGATE_TEST_AZURITE_CONTAINER", suite)?;
    let mut options = AppOptions::new(Database::Sqlite);
    options.storage_url = Some(format!("az://{container}/{}", uuid::Uuid::now_v7().simple()));
    options.storage_options = vec![("azure_storage_use_emulator".into(), "true".into())];
    Some(options)
}

#[derive(Debug, Clone)]
pub enum Database {
    Sqlite,
    /// A Postgres server URL; each app gets a fresh database on it.
    Postgres(String),
}

impl Database {
    /// SQLite always; Postgres too when `MODELGATE_TEST_POSTGRES_URL` is set.
    pub fn all(suite: &str) -> Vec<Database> {
        let mut all = vec![Database::Sqlite];
        if let Some(url) = service_var("MODELGATE_TEST_POSTGRES_URL", &format!("{suite} on Postgres")) {
            all.push(Database::Postgres(url));
        }
        all
    }
}

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    config: Config,
    role: Role,
    running: Option<Running>,
}

pub struct AppOptions {
    pub database: Database,
    /// Storage URL; None means a `blobs` folder in the app's temporary data folder.
    pub storage_url: Option<String>,
    pub storage_endpoint: Option<String>,
    pub storage_options: Vec<(String, String)>,
    /// Runners elsewhere: the app runs only its gateway, routing to these.
    pub runners: Option<Vec<String>>,
    /// The gateway's certificates for those runners (`[gateway.runner_tls]`); None: the ones
    /// it makes in its data folder.
    pub runner_tls: Option<gateway::runners::RunnerTlsConfig>,
}

impl AppOptions {
    pub fn new(database: Database) -> Self {
        Self {
            database,
            storage_url: None,
            storage_endpoint: None,
            storage_options: Vec::new(),
            runners: None,
            runner_tls: None,
        }
    }
}

/// A CA and certificates made as `dev` makes them, for roles started apart (runner
/// processes and a gateway): each is given the files by configuration, as in production.
pub struct Certs {
    dir: PathBuf,
}

/// The certificates runner processes of the tests use, and gateways of apps with
/// `AppOptions::runners` trust (unless `runner_tls` says otherwise): made once, kept in
/// cargo's folder for integration tests' files.
pub fn shared_certs() -> &'static Certs {
    static CERTS: std::sync::LazyLock<Certs> =
        std::sync::LazyLock::new(|| Certs::in_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("runner-tls")));
    &CERTS
}

impl Certs {
    /// The certificates in `dir`, made there first if it does not exist.
    pub fn in_dir(dir: PathBuf) -> Self {
        modelgate::tls::generated(&dir).expect("certificates made");
        Self { dir }
    }

    /// The folder with `ca.pem`, `runner.pem`/`.key` and `gateway.pem`/`.key`.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// `MODELGATE__RUNNER__TLS__*` variables for a runner process.
    pub fn runner_env(&self) -> [(&'static str, PathBuf); 3] {
        [
            ("MODELGATE__RUNNER__TLS__CA_FILE", self.dir().join("ca.pem")),
            ("MODELGATE__RUNNER__TLS__CERT_FILE", self.dir().join("runner.pem")),
            ("MODELGATE__RUNNER__TLS__KEY_FILE", self.dir().join("runner.key")),
        ]
    }

    /// A gateway's `[gateway.runner_tls]` for runners with [`Certs::runner_env`].
    pub fn gateway_config(&self) -> gateway::runners::RunnerTlsConfig {
        gateway::runners::RunnerTlsConfig {
            ca_file: Some(self.dir().join("ca.pem")),
            cert_file: Some(self.dir().join("gateway.pem")),
            key_file: Some(self.dir().join("gateway.key")),
            ..Default::default()
        }
    }
}

/// The gateway's side of the mutual TLS, from a `tls` folder as `dev` makes it.
pub fn gateway_tls(tls_dir: &Path) -> tonic::transport::ClientTlsConfig {
    let read = |name: &str| std::fs::read_to_string(tls_dir.join(name)).expect("a certificate file");
    gateway::runners::client_tls_config(
        &read("ca.pem"),
        &read("gateway.pem"),
        &read("gateway.key"),
        gateway::runners::DEFAULT_SERVER_NAME,
    )
}

/// A gRPC client of the runner at `addr` (`host:port`), holding the gateway's certificate
/// from `tls_dir`.
pub async fn runner_client_at(
    addr: &str,
    tls_dir: &Path,
) -> Result<proto::v1::runner_client::RunnerClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?.tls_config(gateway_tls(tls_dir))?;
    Ok(proto::v1::runner_client::RunnerClient::new(channel.connect().await?))
}

async fn fresh_postgres(server: &str) -> String {
    use sqlx::Executor as _;
    let name = format!("mg_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(server)
        .await
        .expect("connecting to the test Postgres server");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("creating a test database");
    let (base, _) = server.rsplit_once('/').expect("the Postgres URL names a database");
    format!("{base}/{name}")
}

impl TestApp {
    pub async fn spawn(options: AppOptions) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.gateway.listen = "127.0.0.1:0".parse().expect("address");
        config.metrics.listen = Some("127.0.0.1:0".parse().expect("address"));
        config.runner.memory_budget_mib = 1024;
        // As the binary does: chat templates render in a limited child process of it.
        config.runner.template_sandbox = Some(env!("CARGO_BIN_EXE_modelgate").into());
        config.database.url = match &options.database {
            Database::Sqlite => None,
            Database::Postgres(server) => Some(SecretString::from(fresh_postgres(server).await)),
        };
        if let Some(url) = options.storage_url {
            config.storage.url = url;
        }
        config.storage.endpoint = options.storage_endpoint;
        config.storage.options = options.storage_options.into_iter().collect();
        config.gateway.routing.poll_ms = 100;
        if let Some(tls) = options.runner_tls {
            config.gateway.runner_tls = tls;
        } else if options.runners.is_some() {
            config.gateway.runner_tls = shared_certs().gateway_config();
        }
        let role = match options.runners {
            Some(runners) => {
                config.gateway.runners = runners;
                Role::Gateway
            }
            None => Role::All,
        };
        let running = startup::start(&config, role).await.expect("modelgate starts");
        let base = format!("http://{}", running.gateway_addr.expect("the gateway runs"));
        let admin_key =
            running.new_admin_key.as_ref().expect("a fresh app creates an admin key").expose_secret().to_owned();
        TestApp { base, admin_key, client: reqwest::Client::new(), dir, config, role, running: Some(running) }
    }

    /// A client of a gateway that runs elsewhere (a `modelgate` process the test started):
    /// the HTTP helpers work, the in-process ones (metrics, runner client, restart) do not.
    pub fn attached(base: String, admin_key: String) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary folder");
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        TestApp { base, admin_key, client: reqwest::Client::new(), dir, config, role: Role::All, running: None }
    }

    /// The app's object store, opened as the gateway opens it.
    pub fn storage(&self) -> registry::storage::Storage {
        let config = self.config.storage().expect("storage settings");
        registry::storage::Storage::open(&config).expect("the app's store opens")
    }

    /// What resumable sessions left in the store: chunk and assembled objects, and on S3 the
    /// multipart uploads still open (moto lists them on an unsigned `GET /{bucket}?uploads`).
    pub async fn session_leftovers(&self) -> Vec<String> {
        use futures::TryStreamExt as _;
        let listed: Vec<object_store::ObjectMeta> =
            self.storage().object_store().list(None).try_collect().await.expect("the store lists");
        let mut left: Vec<String> =
            listed.into_iter().map(|m| m.location.to_string()).filter(|p| p.contains("/sessions/")).collect();
        let storage = &self.config.storage;
        if let (Some(endpoint), Some(bucket)) = (&storage.endpoint, storage.url.strip_prefix("s3://")) {
            let bucket = bucket.split('/').next().expect("a bucket");
            let listing = reqwest::get(format!("{endpoint}/{bucket}?uploads")).await.expect("moto answers");
            let listing = listing.text().await.expect("a listing");
            left.extend(listing.matches("<UploadId>").map(|_| "an open multipart upload".to_owned()));
        }
        left
    }

    /// The settings the next [`TestApp::restart`] uses.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Another gateway (all roles, its own ports and data folder) on this app's database, store
    /// and signing key, as a second replica behind a load balancer would run.
    pub async fn second_gateway(&self) -> TestApp {
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut config = self.config.clone();
        config.data_dir = dir.path().to_path_buf();
        config.database.url = Some(self.config.database_url().expect("database URL"));
        config.storage = self.config.storage().expect("storage settings");
        config.gateway.signing_key_file = Some(self.config.signing_key_file());
        let running = startup::start(&config, self.role).await.expect("a second gateway starts");
        let base = format!("http://{}", running.gateway_addr.expect("the gateway runs"));
        let admin_key = self.admin_key.clone();
        TestApp {
            base,
            admin_key,
            client: reqwest::Client::new(),
            dir,
            config,
            role: self.role,
            running: Some(running),
        }
    }

    /// Stops every role and starts them again on the same database and store (new ports).
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
        let running = startup::start(&self.config, self.role).await.expect("modelgate starts again");
        assert!(running.new_admin_key.is_none(), "a restart keeps the admin key");
        self.base = format!("http://{}", running.gateway_addr.expect("the gateway runs"));
        self.running = Some(running);
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("clean shutdown");
        }
    }

    fn metrics_url(&self, path: &str) -> String {
        let addr = self.running.as_ref().and_then(|r| r.metrics_addr).expect("metrics are served");
        format!("http://{addr}{path}")
    }

    /// The status of the metrics listener's `/healthz`.
    pub async fn metrics_health(&self) -> u16 {
        self.client.get(self.metrics_url("/healthz")).send().await.expect("health answers").status().as_u16()
    }

    /// What `/metrics` answers now (Prometheus text).
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.metrics_url("/metrics")).send().await.expect("metrics answer");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics text")
    }

    /// The in-process runner's gRPC address.
    pub fn runner_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().and_then(|r| r.runner_addr).expect("the runner runs")
    }

    /// A gRPC client of the in-process runner, with the gateway's certificate.
    pub async fn runner_client(&self) -> proto::v1::runner_client::RunnerClient<tonic::transport::Channel> {
        runner_client_at(&self.runner_addr().to_string(), &self.tls_dir()).await.expect("runner reachable")
    }

    /// The certificates the app made for its runner and gateway (`<data_dir>/tls`).
    pub fn tls_dir(&self) -> PathBuf {
        self.config.data_dir.join(modelgate::tls::DIR)
    }

    pub fn req(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// A dashboard page as the holder of `key` sees it, signed in without a browser.
    pub async fn dashboard_page(&self, key: &str, page: &str) -> String {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client");
        let signed_in = client
            .post(format!("{}/admin/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={key}"))
            .send()
            .await
            .expect("sign-in answers");
        assert_eq!(signed_in.status(), 303, "signed in");
        let cookie =
            signed_in.headers()["set-cookie"].to_str().expect("a cookie").split(';').next().expect("its value");
        let answer =
            client.get(format!("{}{page}", self.base)).header("cookie", cookie).send().await.expect("the page");
        assert_eq!(answer.status(), 200);
        answer.text().await.expect("the page's text")
    }

    pub async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.req(method, path, Some(key));
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// Creates a tenant with an admin-role key and returns that key.
    pub async fn tenant(&self, name: &str) -> String {
        let (status, body) =
            self.call(Method::POST, "/api/v1/tenants", &self.admin_key, Some(json!({ "name": name }))).await;
        assert_eq!(status, 201, "creating tenant {name}: {body}");
        self.key(name, "admin", &self.admin_key).await
    }

    pub async fn key(&self, tenant: &str, role: &str, admin: &str) -> String {
        let path = format!("/api/v1/tenants/{tenant}/keys");
        let (status, body) =
            self.call(Method::POST, &path, admin, Some(json!({ "name": format!("{role} key"), "role": role }))).await;
        assert_eq!(status, 201, "creating a {role} key: {body}");
        body["key"].as_str().expect("the key is shown once").to_owned()
    }

    /// Tenant `acme` with an admin key, and the tests' tiny BERT written to `<data>/tiny` and
    /// committed as `acme/tiny@1`: what most inference tests start from.
    pub async fn acme_with_tiny_model(&self) -> (String, PathBuf) {
        let key = self.tenant("acme").await;
        let dir = self.dir.path().join("tiny");
        crate::tiny_bert::write(&dir);
        self.upload_model(&key, "acme", "tiny", &dir).await;
        (key, dir)
    }

    /// Creates a model, uploads every file of `dir` as version 1 and commits it.
    pub async fn upload_model(&self, key: &str, tenant: &str, model: &str, dir: &Path) -> Value {
        self.upload_task_model(key, tenant, model, "embedding", dir).await
    }

    /// Creates a model of `task`, uploads every file of `dir` into version 1 and commits it.
    pub async fn upload_task_model(&self, key: &str, tenant: &str, model: &str, task: &str, dir: &Path) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/models"),
                key,
                Some(json!({ "name": model, "task": task })),
            )
            .await;
        assert_eq!(status, 201, "creating the model: {body}");
        let version = self.new_version(key, tenant, model).await;
        for (relative, local) in files_of(dir) {
            let bytes = std::fs::read(&local).expect("reading a model file");
            let (status, body) = self.put_file(key, tenant, model, version, &relative, bytes, true).await;
            assert_eq!(status, 201, "uploading {relative}: {body}");
        }
        let (status, body) = self.commit(key, tenant, model, version).await;
        assert_eq!(status, 200, "committing: {body}");
        body
    }

    /// Uploads every file of `dir` as a new version of an existing model and commits it.
    pub async fn upload_version_again(&self, key: &str, model: &str, dir: &Path) -> i64 {
        let version = self.new_version(key, "acme", model).await;
        for (relative, local) in files_of(dir) {
            let (status, body) =
                self.put_file(key, "acme", model, version, &relative, std::fs::read(local).expect("read"), true).await;
            assert_eq!(status, 201, "uploading {relative}: {body}");
        }
        assert_eq!(self.commit(key, "acme", model, version).await.0, 200);
        version
    }

    /// Creates model `model` (an embedding model) in tenant acme and its first draft version.
    pub async fn draft(&self, key: &str, model: &str) -> i64 {
        let body = json!({ "name": model, "task": "embedding" });
        let (status, answer) = self.call(Method::POST, "/api/v1/tenants/acme/models", key, Some(body)).await;
        assert_eq!(status, 201, "creating model {model}: {answer}");
        self.new_version(key, "acme", model).await
    }

    pub async fn new_version(&self, key: &str, tenant: &str, model: &str) -> i64 {
        let (status, body) =
            self.call(Method::POST, &format!("/api/v1/tenants/{tenant}/models/{model}/versions"), key, None).await;
        assert_eq!(status, 201, "creating a version: {body}");
        body["version"].as_i64().expect("a version number")
    }

    #[allow(clippy::too_many_arguments, reason = "a test helper that mirrors the request's parts")]
    pub async fn put_file(
        &self,
        key: &str,
        tenant: &str,
        model: &str,
        version: i64,
        path: &str,
        bytes: Vec<u8>,
        checksum: bool,
    ) -> (u16, Value) {
        let digest = hex::encode(Sha256::digest(&bytes));
        let mut request = self.req(
            Method::PUT,
            &format!("/api/v1/tenants/{tenant}/models/{model}/versions/{version}/files/{path}"),
            Some(key),
        );
        if checksum {
            request = request.header("x-checksum-sha256", digest);
        }
        read(request.body(bytes).send().await.expect("upload sent")).await
    }

    pub async fn commit(&self, key: &str, tenant: &str, model: &str, version: i64) -> (u16, Value) {
        self.call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/models/{model}/versions/{version}/commit"),
            key,
            None,
        )
        .await
    }

    pub async fn set_alias(&self, key: &str, tenant: &str, model: &str, alias: &str, version: i64) {
        let path = format!("/api/v1/tenants/{tenant}/models/{model}/aliases/{alias}");
        let (status, body) = self.call(Method::PUT, &path, key, Some(json!({ "version": version }))).await;
        assert_eq!(status, 200, "setting alias {alias}: {body}");
    }

    pub async fn embed(&self, key: &str, model: &str, input: Value) -> (u16, Value) {
        self.call(Method::POST, "/v1/embeddings", key, Some(json!({ "model": model, "input": input }))).await
    }
}

pub async fn read(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Every file under `dir` with its `/`-separated relative path (hidden ones skipped).
pub fn files_of(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("listing a model folder") {
            let entry = entry.expect("a folder entry");
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                let relative = entry.path().strip_prefix(dir).expect("inside").to_string_lossy().replace('\\', "/");
                out.push((relative, entry.path()));
            }
        }
    }
    out.sort();
    out
}

/// An embedding from an answer's `data[i].embedding`.
pub fn embedding(body: &Value, i: usize) -> Vec<f32> {
    body["data"][i]["embedding"]
        .as_array()
        .expect("an embedding array")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
