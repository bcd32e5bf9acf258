//! `[runner.tls]`: the runner answers only callers whose certificate chains to its CA (the
//! gateways), over mutual TLS. Where the certificates come from (these files, or the ones
//! `dev` makes in its data folder) is decided at start-up, in the binary.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A caller that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate(s) of the CA that gateways' client certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// This runner's certificate chain (PEM), presented to gateways.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Serve plaintext gRPC to anyone who can connect. Only behind a network policy that
    /// admits nothing but gateways; without it (and without files) a runner listening on a
    /// non-loopback address refuses to start.
    pub insecure: bool,
}

impl TlsConfig {
    /// Whether any of the three files is named.
    pub fn has_files(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// The server side of the mutual TLS: our certificate and key, and the CA every caller's
/// certificate must chain to (a caller without one fails the handshake).
pub fn server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .timeout(HANDSHAKE_TIMEOUT)
}
