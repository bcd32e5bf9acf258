//! `[gateway.routing]`: how a gateway finds runners and spreads requests over them.

use serde::{Deserialize, Serialize};

/// How the gateway finds runners and spreads requests over them (`[gateway.routing]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// A `host:port` whose every address is a runner, resolved again every
    /// `dns_refresh_secs` (a Kubernetes headless Service); adds to `gateway.runners`.
    pub dns: Option<String>,
    pub dns_refresh_secs: u64,
    /// How often each runner's status is polled.
    pub poll_ms: u64,
    /// Deadlines per kind of call; a first request includes fetching and loading the model.
    pub embed_timeout_ms: u64,
    pub generate_timeout_ms: u64,
    pub load_timeout_ms: u64,
    /// Requests queued or running on every copy of a version at which the next request
    /// starts another copy on a runner with room.
    pub hot_queue: u64,
    /// Extra copies of a version are unloaded once no copy has been that busy for this long.
    pub replica_idle_secs: u64,
    /// Consecutive failed calls that open a runner's circuit, and for how long it stays open
    /// (then a successful status poll closes it).
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            dns: None,
            dns_refresh_secs: 10,
            poll_ms: 500,
            embed_timeout_ms: 120_000,
            generate_timeout_ms: 600_000,
            load_timeout_ms: 600_000,
            hot_queue: 16,
            replica_idle_secs: 60,
            breaker_failures: 3,
            breaker_open_ms: 5_000,
        }
    }
}
