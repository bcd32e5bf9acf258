//! Registries on fresh databases of each backend, and what most tests start from: a tenant,
//! a model, and versions that really commit (a tiny LSTM classifier passes validation).

use std::path::Path;

use bytes::Bytes;
use registry::aliases::AliasTarget;
use registry::db::Db;
use registry::files::Upload;
use registry::keys::{ApiKey, KeyRole};
use registry::limits::Limits;
use registry::models::Model;
use registry::names::{AliasName, Digest, FilePath, ModelName, Role, Task, TenantSlug};
use registry::page::{Page, PageRequest};
use registry::storage::{Storage, StorageConfig};
use registry::tenants::Tenant;
use registry::versions::{NewVersion, Version, VersionFile};
use registry::{Actor, Registry};
use serde_json::json;

/// Names the Postgres server the suite also runs on; unset, only SQLite is tested.
pub const POSTGRES_VAR: &str = "MODELGATE_TEST_POSTGRES_URL";

/// A registry on a fresh database with in-memory object storage.
pub struct TestDb {
    pub registry: Registry,
    /// `sqlite` or `postgres`, for assertion messages.
    pub backend: &'static str,
    _dir: tempfile::TempDir,
}

/// The Postgres server's URL, or None (said once per suite) when the variable is unset.
pub fn postgres_server(suite: &str) -> Option<String> {
    match std::env::var(POSTGRES_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {suite} on Postgres: {POSTGRES_VAR} is not set");
            None
        }
    }
}

/// A fresh, empty database on the Postgres server at `server`; answers its URL.
pub async fn fresh_postgres(server: &str) -> String {
    use sqlx::{Connection as _, Executor as _};
    let name = format!("mg_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(server).await.expect("connecting to the test Postgres server");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("creating a test database");
    let (base, _) = server.rsplit_once('/').expect("the Postgres URL names a database");
    format!("{base}/{name}")
}

/// The URL of a SQLite file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("registry.db").display())
}

/// A registry on the database at `url`, migrated, with in-memory object storage.
pub async fn open(url: &str) -> Registry {
    let db = Db::connect(url).await.expect("the database opens");
    db.migrate().await.expect("the migrations apply");
    let storage =
        Storage::open(&StorageConfig { url: "memory:///".into(), ..StorageConfig::default() }).expect("memory store");
    Registry::new(db, storage)
}

/// A registry on a fresh SQLite file, and one on a fresh Postgres database when the server
/// is configured: a test runs its body on each.
pub async fn each_database(suite: &str) -> Vec<TestDb> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut all = vec![TestDb { registry: open(&sqlite_url(dir.path())).await, backend: "sqlite", _dir: dir }];
    if let Some(server) = postgres_server(suite) {
        let url = fresh_postgres(&server).await;
        let dir = tempfile::tempdir().expect("temporary folder");
        all.push(TestDb { registry: open(&url).await, backend: "postgres", _dir: dir });
    }
    all
}

/// The actor of a test's changes, as an API key would be.
pub fn actor() -> Actor {
    Actor { key_id: "test-key".into(), source_ip: Some("127.0.0.1".into()) }
}

/// A key of the tenant named `app`, without limits, and its secret.
pub async fn key(registry: &Registry, tenant: &Tenant, role: Role) -> (ApiKey, String) {
    let role = KeyRole::Tenant(role);
    let limits = Limits::default();
    registry.create_key(&actor(), Some(&tenant.id), "app", role, None, limits).await.expect("creating a key")
}

pub async fn tenant(registry: &Registry, slug: &str) -> Tenant {
    let slug = TenantSlug::parse(slug).expect("a tenant name");
    registry.create_tenant(&actor(), &slug).await.expect("creating a tenant")
}

/// A classification model (what the tiny LSTM classifier commits as).
pub async fn model(registry: &Registry, tenant: &Tenant, name: &str) -> Model {
    tagged_model(registry, tenant, name, &[]).await
}

pub async fn tagged_model(registry: &Registry, tenant: &Tenant, name: &str, tags: &[&str]) -> Model {
    let name = ModelName::parse(name).expect("a model name");
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    registry.create_model(&actor(), &tenant.id, &name, Task::Classification, "", &tags).await.expect("creating a model")
}

pub fn alias(name: &str) -> AliasName {
    AliasName::parse(name).expect("an alias name")
}

/// Points `name` at one version.
pub async fn set_alias(registry: &Registry, model: &Model, name: &str, version: i64) {
    let targets = [AliasTarget { version, weight: 100 }];
    registry.set_alias(&actor(), model, &alias(name), &targets).await.expect("setting an alias");
}

/// Every item of a paged list, fetched `limit` at a time through the cursors it hands out.
pub async fn all_pages<T, F, Fut>(limit: i64, mut fetch: F) -> Vec<T>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = registry::Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let request = PageRequest::parse(Some(limit), cursor.as_deref()).expect("a cursor this server handed out");
        let page = fetch(request).await.expect("a page");
        assert!(page.data.len() as i64 <= limit, "a page holds at most its limit");
        items.extend(page.data);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return items,
        }
    }
}

/// A safetensors file of zero-valued F32 tensors of these shapes.
fn safetensors(tensors: &[(&str, &[u64])]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<u64>() * 4;
        header.insert(
            (*name).into(),
            json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes] }),
        );
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).expect("json");
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.resize(file.len() + usize::try_from(offset).expect("a small file"), 0);
    file
}

/// The files of a tiny LSTM classifier that passes commit-time validation; `seed` changes
/// the vocabulary, so versions can differ in content.
pub fn classifier_files(seed: u32) -> Vec<(&'static str, Vec<u8>)> {
    let config = json!({ "model_type": "lstm_classifier", "vocab_size": 4, "embedding_dim": 2, "hidden_dim": 1, "max_length": 16 });
    let weights = safetensors(&[
        ("embedding.weight", &[4, 2]),
        ("lstm.weight_ih_l0", &[4, 2]),
        ("lstm.weight_hh_l0", &[4, 1]),
        ("dense.weight", &[1, 1]),
    ]);
    vec![
        ("config.json", serde_json::to_vec(&config).expect("json")),
        ("vocab.json", serde_json::to_vec(&json!({ format!("word{seed}"): 1 })).expect("json")),
        ("model.safetensors", weights),
    ]
}

/// Uploads one file into a draft, declaring its sha256 as clients do (`X-Checksum-Sha256`).
pub async fn try_upload(
    registry: &Registry,
    model: &Model,
    number: i64,
    path: &str,
    bytes: Vec<u8>,
) -> registry::Result<VersionFile> {
    use sha2::Digest as _;
    let path = FilePath::parse(path).expect("a file path");
    let digest = Digest::from_bytes(&sha2::Sha256::digest(&bytes).into());
    let upload = Upload {
        path: &path,
        declared: Some(&digest),
        content_length: Some(bytes.len() as u64),
        body: futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]),
    };
    registry.upload_file(&actor(), model, number, upload).await
}

pub async fn upload(registry: &Registry, model: &Model, number: i64, path: &str, bytes: Vec<u8>) -> VersionFile {
    try_upload(registry, model, number, path, bytes).await.expect("uploading a file")
}

/// A new draft with the classifier's files, not committed.
pub async fn draft(registry: &Registry, model: &Model) -> Version {
    let version = registry.create_version(&actor(), model, NewVersion::default()).await.expect("creating a draft");
    for (path, bytes) in classifier_files(version.number as u32) {
        upload(registry, model, version.number, path, bytes).await;
    }
    version
}

/// A new version with the classifier's files, committed: ready and callable.
pub async fn ready(registry: &Registry, model: &Model) -> Version {
    let number = draft(registry, model).await.number;
    registry.commit_version(&actor(), model, number, None).await.expect("committing the draft")
}
