//! One runner as a gateway knows it: its address, a gRPC client per thread (over mutual TLS
//! unless `[gateway.runner_tls] insecure`), what its last status poll said, and the calls this
//! gateway has on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::v1::runner_client::RunnerClient;
use proto::v1::{StatusRequest, StatusResponse};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("invalid runner address {address:?}")]
pub struct AddressError {
    address: String,
    #[source]
    source: tonic::transport::Error,
}

/// What the last poll said of one loaded version.
#[derive(Debug, Clone, Copy)]
pub(super) struct LoadedCopy {
    pub(super) in_flight: u64,
    pub(super) pinned: bool,
}

#[derive(Debug, Default)]
pub(super) struct View {
    /// None until the first poll answers or fails.
    pub(super) healthy: Option<bool>,
    pub(super) models: HashMap<String, LoadedCopy>,
    pub(super) memory_used: u64,
    pub(super) memory_budget: u64,
    pub(super) failures: u32,
    pub(super) open_until: Option<Instant>,
}

pub(super) struct Member {
    pub(super) address: String,
    endpoint: Endpoint,
    /// Calls this gateway has on it now, per version: the queue it adds between polls.
    outstanding: Mutex<HashMap<String, u64>>,
    view: Mutex<View>,
}

impl Member {
    /// With `tls`, the connection is mutual TLS whatever the address's scheme (`http://` is
    /// how runners are listed and discovered; tonic would skip TLS for it).
    pub(super) fn new(address: &str, tls: Option<&ClientTlsConfig>) -> Result<Self, AddressError> {
        let error = |source| AddressError { address: address.to_owned(), source };
        let uri = match (tls, address.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => address.to_owned(),
        };
        let mut endpoint =
            Endpoint::from_shared(uri).map_err(error)?.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(error)?;
        }
        Ok(Self { address: address.to_owned(), endpoint, outstanding: Mutex::default(), view: Mutex::default() })
    }

    /// A client whose connection lives on the calling thread's runtime. Each HTTP worker
    /// thread talks to each runner over its own HTTP/2 connection, so a call and its answer
    /// never wait for a wake-up on another thread.
    pub(super) fn client(&self) -> RunnerClient<Channel> {
        thread_local! {
            static CLIENTS: std::cell::RefCell<HashMap<String, RunnerClient<Channel>>> = Default::default();
        }
        CLIENTS.with_borrow_mut(|clients| {
            clients
                .entry(self.address.clone())
                .or_insert_with(|| {
                    RunnerClient::new(self.endpoint.connect_lazy())
                        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
                })
                .clone()
        })
    }

    pub(super) fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn outstanding(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.outstanding.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts a call against its member until dropped.
pub(super) struct Outstanding {
    member: Arc<Member>,
    version_id: String,
}

impl Outstanding {
    pub(super) fn start(member: &Arc<Member>, version_id: &str) -> Self {
        *member.outstanding().entry(version_id.to_owned()).or_default() += 1;
        Self { member: member.clone(), version_id: version_id.to_owned() }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let mut outstanding = self.member.outstanding();
        if let Some(n) = outstanding.get_mut(&self.version_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                outstanding.remove(&self.version_id);
            }
        }
    }
}

pub(super) async fn status(member: &Member) -> Result<StatusResponse, tonic::Status> {
    let request = crate::trace::grpc_request(StatusRequest {}, STATUS_TIMEOUT);
    member.client().status(request).await.map(tonic::Response::into_inner)
}

/// The call never reached a runner, or the runner went away with it (refused, reset, no
/// route): an idempotent call may go elsewhere.
pub(super) fn is_connection_failure(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
        && std::error::Error::source(status).is_some()
}
