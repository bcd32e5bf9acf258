//! Databases made before the two per-backend migration folders became one tree still start:
//! the files kept their names and bytes, so sqlx finds each applied version with the same
//! checksum. The fixtures were made by the code of 2026-11-28 (ff0f8c6): a tenant `acme` with
//! a model `minilm`, every migration of that day applied.

use std::path::PathBuf;

use registry::Registry;
use registry::names::{ModelName, TenantSlug};
use sqlx::Connection as _;

use crate::helpers::{fresh_postgres, open, postgres_server, sqlite_url};

/// Every file in migrations/, as sqlx counts them.
const MIGRATIONS: i64 = 7;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A copy of the SQLite fixture in a temporary folder (the fixture itself stays untouched).
fn sqlite_fixture_copy() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::copy(fixture("sqlite-2026-11-28.db"), dir.path().join("registry.db")).expect("copying the fixture");
    let url = sqlite_url(dir.path());
    (dir, url)
}

async fn assert_old_data_reads(registry: &Registry, backend: &str) {
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(registry.db().pool())
        .await
        .expect("counting applied migrations");
    assert_eq!(applied, MIGRATIONS, "{backend}: each migration applied once");
    let acme = TenantSlug::parse("acme").expect("a tenant name");
    let tenant = registry.tenant_by_slug(&acme).await.expect("the old tenant is still there");
    let minilm = ModelName::parse("minilm").expect("a model name");
    let model = registry.model(&tenant.id, &minilm).await.expect("the old model is still there");
    assert_eq!(model.tags, ["fixture"], "{backend}");
}

#[tokio::test]
async fn a_sqlite_database_from_before_the_single_tree_opens_and_migrates() {
    let (_dir, url) = sqlite_fixture_copy();
    let registry = open(&url).await;
    assert_old_data_reads(&registry, "sqlite").await;
}

#[tokio::test]
async fn a_changed_migration_file_stops_the_start() {
    let (_dir, url) = sqlite_fixture_copy();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("opening the copy");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 20261126000000")
        .execute(&mut conn)
        .await
        .expect("recording another checksum");
    conn.close().await.expect("closing");
    let db = registry::db::Db::connect(&url).await.expect("the database opens");
    let refused = db.migrate().await.expect_err("a modified migration is refused");
    assert!(format!("{:?}", refused).contains("20261126000000"), "the error names the migration: {refused:?}");
}

#[tokio::test]
async fn a_postgres_database_from_before_the_single_tree_migrates() {
    let Some(server) = postgres_server("the Postgres dump of 2026-11-28") else { return };
    let url = fresh_postgres(&server).await;
    let dump = std::fs::read_to_string(fixture("postgres-2026-11-28.sql")).expect("the dump");
    // pg_dump's `\restrict` lines are psql commands, not SQL.
    let sql: String = dump.lines().filter(|line| !line.starts_with('\\')).flat_map(|line| [line, "\n"]).collect();
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connecting to the fresh database");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("loading the dump");
    conn.close().await.expect("closing");
    let registry = open(&url).await;
    assert_old_data_reads(&registry, "postgres").await;
}
