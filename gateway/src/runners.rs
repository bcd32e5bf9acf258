//! The runners this gateway sends inference to, over gRPC. A version goes to the runner
//! that ranks first for it by rendezvous hashing (so it lands where it is already loaded);
//! a call whose connection fails moves on to the next runner.

use std::time::Duration;

use proto::v1::runner_client::RunnerClient;
use proto::v1::{
    ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse, GenerateChunk, GenerateRequest, LoadRequest,
    ModelSpec, PinRequest, StatusRequest, StatusResponse, UnloadRequest,
};
use sha2::{Digest as _, Sha256};
use tonic::transport::{Channel, Endpoint};

use crate::error::ApiError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A cold request includes downloading and loading the model.
const INFERENCE_TIMEOUT: Duration = Duration::from_secs(300);
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Runner {
    address: String,
    client: RunnerClient<Channel>,
}

#[derive(Clone)]
pub struct RunnerPool {
    runners: Vec<Runner>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid runner address {address:?}")]
pub struct AddressError {
    address: String,
    #[source]
    source: tonic::transport::Error,
}

impl RunnerPool {
    /// Connections are made lazily, so a gateway starts before its runners.
    pub fn new(addresses: &[String]) -> Result<Self, AddressError> {
        let runners = addresses
            .iter()
            .map(|address| {
                let endpoint = Endpoint::from_shared(address.clone())
                    .map_err(|source| AddressError { address: address.clone(), source })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true);
                let client = RunnerClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(proto::MAX_MESSAGE_BYTES);
                Ok(Runner { address: address.clone(), client })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { runners })
    }

    /// Runners in the order this version tries them: highest rendezvous score first.
    fn ranked(&self, version_id: &str) -> Vec<&Runner> {
        let score = |r: &Runner| {
            let h = Sha256::new().chain_update(version_id).chain_update(b"/").chain_update(&r.address).finalize();
            u64::from_be_bytes(h[..8].try_into().unwrap_or_default())
        };
        let mut ranked: Vec<&Runner> = self.runners.iter().collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(score(r)));
        ranked
    }

    pub async fn embed(&self, spec: ModelSpec, inputs: Vec<String>) -> Result<EmbedResponse, ApiError> {
        let version_id = spec.version_id.clone();
        let request = EmbedRequest { model: Some(spec), inputs };
        self.call(&version_id, |mut client| {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(INFERENCE_TIMEOUT);
            async move { client.embed(call).await }
        })
        .await
    }

    pub async fn classify(&self, spec: ModelSpec, inputs: Vec<String>) -> Result<ClassifyResponse, ApiError> {
        let version_id = spec.version_id.clone();
        let request = ClassifyRequest { model: Some(spec), inputs };
        self.call(&version_id, |mut client| {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(INFERENCE_TIMEOUT);
            async move { client.classify(call).await }
        })
        .await
    }

    /// Starts a generation on the version's runner; the chunks follow on the stream, and
    /// dropping it stops the generation.
    pub async fn generate(&self, request: GenerateRequest) -> Result<tonic::Streaming<GenerateChunk>, ApiError> {
        let version_id = request.model.as_ref().map(|m| m.version_id.clone()).unwrap_or_default();
        self.call(&version_id, |mut client| {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(INFERENCE_TIMEOUT);
            async move { client.generate(call).await }
        })
        .await
    }

    /// Makes a call on the version's runner, and once more on the next one if the first cannot
    /// be reached (a call that reached a runner is not repeated).
    async fn call<T, F, Fut>(&self, version_id: &str, call: F) -> Result<T, ApiError>
    where
        F: Fn(RunnerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for runner in self.ranked(version_id).into_iter().take(2) {
            match call(runner.client.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_connection_failure(&status) => {
                    tracing::warn!(runner.address = %runner.address, error = %status, "runner unreachable; trying the next one");
                    last = Some(status);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Err(match last {
            Some(status) => ApiError::unavailable("runner_unavailable", "no runner is reachable; try again shortly")
                .with_source(status),
            None => ApiError::unavailable("runner_unavailable", "no runners are configured"),
        })
    }

    /// Loads (and optionally pins) a version on the runner its traffic goes to; answers that
    /// runner's address and the model's cost there.
    pub async fn load(&self, spec: ModelSpec, pin: bool) -> Result<(String, u64), ApiError> {
        let version_id = spec.version_id.clone();
        let address = self.ranked(&version_id).first().map(|r| r.address.clone()).unwrap_or_default();
        let request = LoadRequest { model: Some(spec), pin };
        let answer = self
            .call(&version_id, |mut client| {
                let mut call = tonic::Request::new(request.clone());
                call.set_timeout(INFERENCE_TIMEOUT);
                async move { client.load(call).await }
            })
            .await?;
        Ok((address, answer.memory_bytes))
    }

    /// Unloads a version from every runner that has it idle; answers, per runner, whether
    /// it did (or why not).
    pub async fn unload(&self, version_id: &str) -> Vec<(String, Result<bool, tonic::Status>)> {
        let calls = self.runners.iter().map(|r| async move {
            let mut request = tonic::Request::new(UnloadRequest { version_id: version_id.to_owned() });
            request.set_timeout(STATUS_TIMEOUT);
            (r.address.clone(), r.client.clone().unload(request).await.map(|a| a.into_inner().unloaded))
        });
        futures::future::join_all(calls).await
    }

    /// Pins or unpins a version on every runner; answers, per runner, whether it has it loaded.
    pub async fn pin(&self, version_id: &str, pinned: bool) -> Vec<(String, Result<bool, tonic::Status>)> {
        let calls = self.runners.iter().map(|r| async move {
            let mut request = tonic::Request::new(PinRequest { version_id: version_id.to_owned(), pinned });
            request.set_timeout(STATUS_TIMEOUT);
            (r.address.clone(), r.client.clone().pin(request).await.map(|a| a.into_inner().loaded))
        });
        futures::future::join_all(calls).await
    }

    /// The status of every runner that answers.
    pub async fn statuses(&self) -> Vec<(String, Result<StatusResponse, tonic::Status>)> {
        let calls = self.runners.iter().map(|r| async move {
            let mut request = tonic::Request::new(StatusRequest {});
            request.set_timeout(STATUS_TIMEOUT);
            (r.address.clone(), r.client.clone().status(request).await.map(tonic::Response::into_inner))
        });
        futures::future::join_all(calls).await
    }
}

/// The call never reached a runner (refused, reset, no route): safe to retry elsewhere.
fn is_connection_failure(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && std::error::Error::source(status).is_some()
}
