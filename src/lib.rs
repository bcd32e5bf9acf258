//! The `modelgate` binary's library: command line, configuration, telemetry and start-up.
//! `main.rs` only calls [`cli::run`], so tests start exactly what production starts.

pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod metrics;
pub mod private;
pub mod pull;
pub mod push;
pub mod startup;
pub mod telemetry;
pub mod tls;
