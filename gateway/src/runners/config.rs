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

/// `[gateway.runner_tls]`: the gateway's side of the mutual TLS with runners. Where the
/// certificates come from (these files, or the ones `dev` makes in its data folder) is decided
/// at start-up, in the binary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerTlsConfig {
    /// PEM certificate(s) of the CA that runners' certificates must chain to.
    pub ca_file: Option<std::path::PathBuf>,
    /// The gateway's client certificate chain (PEM), presented to runners.
    pub cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<std::path::PathBuf>,
    /// The name runners' certificates are checked for, whatever address a runner is reached
    /// at (discovered runners are pod IPs).
    pub server_name: String,
    /// Talk plaintext gRPC to runners (which must then be `[runner.tls] insecure` too).
    pub insecure: bool,
}

impl Default for RunnerTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            insecure: false,
        }
    }
}

/// The name in runners' certificates unless `server_name` says otherwise.
pub const DEFAULT_SERVER_NAME: &str = "modelgate-runner";

impl RunnerTlsConfig {
    /// Whether any of the three files is named.
    pub fn has_files(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// The client side of the mutual TLS: the CA runners' certificates must chain to, the name
/// they must carry, and the certificate and key the gateway shows them.
pub fn client_tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    server_name: &str,
) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(server_name)
}
