//! End-to-end tests: real roles on port 0, a real database (SQLite always, Postgres when
//! `MODELGATE_TEST_POSTGRES_URL` is set), real object stores (local folder always; S3 and
//! Azure Blob when their variables are set) and real candle models.

mod artifacts;
mod authz_matrix;
mod bad_input;
mod blast_radius;
mod browser;
mod canary;
mod classification;
mod cli;
mod containment;
mod dashboard;
mod dev_binary;
mod gc;
mod generation;
mod helm;
mod helpers;
mod hf;
mod inference;
mod isolation;
mod kserve;
mod limits;
mod lstm;
mod metrics;
mod minilm;
mod model_cache;
mod openapi;
mod otlp;
mod outage;
mod pagination;
mod postgres_restart;
mod presigned;
mod registry;
mod routing;
mod runner_auth;
mod sdk_clients;
mod storage;
mod tenant_bounds;
mod tiny_bert;
mod tiny_llama;
mod tokens;
mod uploads;
mod usage;
