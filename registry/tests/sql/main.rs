//! The registry's SQL, driven through `Registry` against real databases: SQLite always,
//! Postgres too when `MODELGATE_TEST_POSTGRES_URL` names a server (each test gets a fresh
//! database on it). The same test body runs on both backends.

mod aliases;
mod callable;
mod helpers;
mod keys;
mod migrations;
mod models;
mod quarantine;
mod tenants;
mod usage;
mod versions;
