//! Registries on fresh databases of each backend.

use std::path::Path;

use registry::Registry;
use registry::db::Db;
use registry::storage::{Storage, StorageConfig};

/// Names the Postgres server the suite also runs on; unset, only SQLite is tested.
pub const POSTGRES_VAR: &str = "MODELGATE_TEST_POSTGRES_URL";

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
