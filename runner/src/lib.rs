#![doc = include_str!("../README.md")]

mod artifacts;
mod blocking;
mod cache;
pub mod convert;
mod device;
mod error;
#[cfg_attr(
    not(test),
    expect(dead_code, unused_imports, reason = "the generation scheduler (issue 24) is its first user")
)]
mod kv;
pub mod metrics;
mod models;
pub mod template;
#[cfg(test)]
mod test_rng;
pub mod tls;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::models::GenerateParams;
pub use artifacts::BlobAddress;
pub use device::GpuDtype;
pub use error::Error;
pub use models::Embedded;
use proto::v1::runner_server::{Runner as RunnerRpc, RunnerServer};
use proto::v1::{
    Classification, ClassifyRequest, ClassifyResponse, EmbedRequest, EmbedResponse, Embedding, GenerateChunk,
    GenerateRequest, LabelScore, LoadRequest, LoadResponse, LoadedModel, ModelSpec, PinRequest, PinResponse,
    StatusRequest, StatusResponse, UnloadRequest, UnloadResponse,
};

/// Inputs in one embedding request at most.
const MAX_INPUTS: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Address of the gRPC server (`serve --role runner`); `dev` uses an ephemeral loopback port.
    pub listen: SocketAddr,
    /// Where downloaded model files are kept, by sha256 (default: `<data_dir>/artifacts`).
    pub cache_dir: Option<PathBuf>,
    /// Bytes the artifact cache may keep; least recently used files go first.
    pub cache_max_bytes: u64,
    /// Memory the loaded models may take together (device memory on a GPU).
    pub memory_budget_mib: u64,
    /// The same in bytes, when set (it wins over `memory_budget_mib`).
    pub memory_budget_bytes: Option<u64>,
    /// Models without a request for this long are unloaded (0: never), unless pinned.
    pub idle_ttl_secs: u64,
    /// Requests waiting per model before new ones are refused with RESOURCE_EXHAUSTED.
    pub queue_depth: usize,
    /// Inputs run together in one batch at most.
    pub max_batch_inputs: usize,
    /// Tokens (all inputs' together, before padding) run in one batch at most; a single
    /// request over it runs alone.
    pub max_batch_tokens: usize,
    /// How long (µs) a batch waits for more requests once one arrives; 0 takes only what is
    /// already queued.
    pub max_batch_wait_us: u64,
    /// The type of model weights on a GPU: `auto` (the model's own half-precision type, else
    /// f16 for encoders and bf16 for generators), `f16`, `bf16` or `f32`. The CPU computes in f32.
    pub gpu_dtype: GpuDtype,
    /// Positions (prompt and completion) a generation may span at most, whatever a model
    /// declares: its KV cache and rotary tables for this many count in its memory.
    pub max_context_tokens: u64,
    /// The `modelgate` executable that renders chat templates in a child process limited in
    /// memory and time (the binary sets itself); unset, templates render in this process,
    /// bounded in instructions and output only.
    pub template_sandbox: Option<PathBuf>,
    /// Mutual TLS: who may call this runner (`[runner.tls]`).
    pub tls: tls::TlsConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            cache_dir: None,
            cache_max_bytes: 50 * 1024 * 1024 * 1024,
            memory_budget_mib: 4096,
            memory_budget_bytes: None,
            idle_ttl_secs: 0,
            queue_depth: 64,
            max_batch_inputs: 256,
            max_batch_tokens: 16_384,
            max_batch_wait_us: 0,
            gpu_dtype: GpuDtype::Auto,
            max_context_tokens: 32_768,
            template_sandbox: None,
            tls: tls::TlsConfig::default(),
        }
    }
}

/// The runner role: the model cache and the gRPC service over it.
#[derive(Clone)]
pub struct Runner {
    models: cache::ModelCache,
    blob_address: BlobAddress,
}

impl Runner {
    /// `store` is the object store the gateway's object paths point into; `cache_dir`
    /// is where fetched files are kept (the config's, resolved by the caller); `blob_address`
    /// is the store's layout of tenants' blobs, which every spec's object paths must follow.
    pub fn new(
        config: &RunnerConfig,
        cache_dir: PathBuf,
        store: Arc<dyn ObjectStore>,
        blob_address: BlobAddress,
    ) -> Result<Self, Error> {
        let artifacts = artifacts::ArtifactCache::new(cache_dir, store, config.cache_max_bytes)?;
        let placement = device::Placement::new(config.gpu_dtype);
        tracing::info!(device = %device::name(&placement.device), gpu_dtype = ?config.gpu_dtype, memory_budget_mib = config.memory_budget_mib, "runner ready");
        let limits = worker::BatchLimits {
            queue_depth: config.queue_depth.max(1),
            max_batch_inputs: config.max_batch_inputs.max(1),
            max_batch_tokens: config.max_batch_tokens.max(1),
            max_batch_wait: std::time::Duration::from_micros(config.max_batch_wait_us),
        };
        let budget = config.memory_budget_bytes.unwrap_or(config.memory_budget_mib * 1024 * 1024);
        let renderer = match &config.template_sandbox {
            Some(exe) => template::Renderer::Sandbox(exe.clone()),
            None => template::Renderer::InProcess,
        };
        let model_limits = cache::ModelLimits { max_context: config.max_context_tokens.max(1), renderer };
        let models = cache::ModelCache::new(artifacts, placement, budget, limits, model_limits);
        if config.idle_ttl_secs > 0 {
            tokio::spawn(models.clone().expire_idle(std::time::Duration::from_secs(config.idle_ttl_secs)));
        }
        Ok(Self { models, blob_address })
    }

    pub fn into_service(self) -> RunnerServer<Self> {
        RunnerServer::new(self)
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
    }

    /// Serves gRPC on `listener` until `shutdown` completes; with `tls`, only to callers whose
    /// certificate chains to its CA (see [`tls::server_config`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls)?;
        }
        server
            .add_service(self.into_service())
            // Without TCP_NODELAY small replies wait on delayed ACKs (~40 ms each).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }
}

impl Runner {
    /// The request's model, if every one of its files is its tenant's stored blob.
    fn admit(&self, spec: Option<ModelSpec>) -> Result<ModelSpec, Status> {
        let spec = spec.ok_or_else(|| Status::invalid_argument("model is required"))?;
        artifacts::check_spec(&spec, &self.blob_address)?;
        Ok(spec)
    }
}

/// When the caller stops waiting: its `grpc-timeout` from now.
fn deadline<T>(request: &Request<T>) -> Option<std::time::Instant> {
    use std::time::Duration;
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    std::time::Instant::now().checked_add(timeout)
}

/// A seed for a generation that asked for none.
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// The gateway's request id and trace id (from the call's metadata) on this call's log lines;
/// when spans are exported, the gateway's span is this one's parent.
fn call_span<T>(rpc: &'static str, request: &Request<T>) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let request_id = request.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let parent = proto::trace::from_metadata(request.metadata());
    let remote = parent.span().span_context().clone();
    let trace_id = if remote.is_valid() { remote.trace_id().to_string() } else { String::new() };
    let span = tracing::info_span!("rpc", rpc, request.id = %request_id, trace.id = %trace_id);
    if remote.is_valid() {
        // Fails only where no spans are exported.
        let _ = span.set_parent(parent);
    }
    span
}

/// Runs a call inside its span and logs how it ended.
async fn traced<T>(span: tracing::Span, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    let started = std::time::Instant::now();
    let result = call.instrument(span.clone()).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| match &result {
        Ok(_) => tracing::info!(duration_ms, "call done"),
        Err(status) => {
            tracing::info!(duration_ms, grpc.code = ?status.code(), error = %status.message(), "call failed")
        }
    });
    result
}

#[tonic::async_trait]
impl RunnerRpc for Runner {
    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        let span = call_span("embed", &request);
        traced(span, async move {
            let request = request.into_inner();
            let spec = self.admit(request.model)?;
            if request.inputs.is_empty() {
                return Err(Status::invalid_argument("inputs must not be empty"));
            }
            if request.inputs.len() > MAX_INPUTS {
                return Err(Status::invalid_argument(format!("at most {MAX_INPUTS} inputs per request")));
            }
            let worker = self.models.get(&spec).await.map_err(|e| e.status())?;
            if worker.labels.is_some() {
                return Err(Status::invalid_argument("this model classifies; it does not embed"));
            }
            let embedded = worker.embed(request.inputs).await?;
            let embeddings = embedded.into_iter().map(|e| Embedding { values: e.values, tokens: e.tokens }).collect();
            Ok(Response::new(EmbedResponse { embeddings }))
        })
        .await
    }

    async fn classify(&self, request: Request<ClassifyRequest>) -> Result<Response<ClassifyResponse>, Status> {
        let span = call_span("classify", &request);
        traced(span, async move {
            let request = request.into_inner();
            let spec = self.admit(request.model)?;
            if request.inputs.is_empty() || request.inputs.len() > MAX_INPUTS {
                return Err(Status::invalid_argument(format!("send 1 to {MAX_INPUTS} inputs")));
            }
            let worker = self.models.get(&spec).await.map_err(|e| e.status())?;
            let labels =
                worker.labels.clone().ok_or_else(|| Status::invalid_argument("this model does not classify"))?;
            let scored = worker.embed(request.inputs).await?;
            let results = scored
                .into_iter()
                .map(|e| Classification {
                    scores: labels
                        .iter()
                        .zip(e.values)
                        .map(|(label, score)| LabelScore { label: label.clone(), score })
                        .collect(),
                    tokens: e.tokens,
                })
                .collect();
            Ok(Response::new(ClassifyResponse { results }))
        })
        .await
    }

    type GenerateStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<GenerateChunk, Status>> + Send>>;

    async fn generate(&self, request: Request<GenerateRequest>) -> Result<Response<Self::GenerateStream>, Status> {
        let span = call_span("generate", &request);
        let deadline = deadline(&request);
        traced(span, async move {
            let request = request.into_inner();
            let spec = self.admit(request.model)?;
            if request.prompt.is_empty() == request.messages.is_empty() {
                return Err(Status::invalid_argument("send either a prompt or messages"));
            }
            if request.max_tokens == 0 {
                return Err(Status::invalid_argument("max_tokens must be at least 1"));
            }
            let params = GenerateParams {
                prompt: (!request.prompt.is_empty()).then_some(request.prompt),
                messages: request.messages.into_iter().map(|m| (m.role, m.content)).collect(),
                max_tokens: request.max_tokens as usize,
                temperature: request.temperature.map(f64::from),
                top_p: request.top_p.map(f64::from),
                top_k: request.top_k.map(|k| k as usize),
                seed: request.seed.unwrap_or_else(rand_seed),
                repetition_penalty: request.repetition_penalty,
                stop: request.stop,
                deadline,
            };
            let lease = self.models.get(&spec).await.map_err(|e| e.status())?;
            let pieces = lease.generate(params)?;
            // The worker stops once this stream (and so its receiver) is dropped; the stream holds
            // the lease, so the model is not evicted while it generates.
            let stream = futures::stream::unfold((pieces, lease), |(mut pieces, lease)| async move {
                let piece = pieces.recv().await?;
                let chunk = piece
                    .map(|p| GenerateChunk {
                        text: p.text,
                        finish_reason: p.finish_reason.unwrap_or_default().to_owned(),
                        prompt_tokens: p.prompt_tokens,
                        completion_tokens: p.completion_tokens,
                    })
                    .map_err(|e| e.status());
                Some((chunk, (pieces, lease)))
            });
            Ok(Response::new(Box::pin(stream) as Self::GenerateStream))
        })
        .await
    }

    async fn load(&self, request: Request<LoadRequest>) -> Result<Response<LoadResponse>, Status> {
        let span = call_span("load", &request);
        traced(span, async move {
            let request = request.into_inner();
            let spec = self.admit(request.model)?;
            self.models.preload(&spec, request.pin).await.map_err(|e| e.status())?;
            let memory_bytes = self
                .models
                .loaded()
                .into_iter()
                .find(|(v, ..)| *v == spec.version_id)
                .map_or(0, |(_, w, ..)| w.memory_bytes);
            Ok(Response::new(LoadResponse { memory_bytes }))
        })
        .await
    }

    async fn unload(&self, request: Request<UnloadRequest>) -> Result<Response<UnloadResponse>, Status> {
        let unloaded = self.models.unload(&request.into_inner().version_id)?;
        Ok(Response::new(UnloadResponse { unloaded }))
    }

    async fn pin(&self, request: Request<PinRequest>) -> Result<Response<PinResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(PinResponse { loaded: self.models.set_pinned(&request.version_id, request.pinned) }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let loaded: Vec<LoadedModel> = self
            .models
            .loaded()
            .into_iter()
            .map(|(version_id, w, pinned, in_flight)| {
                let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                LoadedModel {
                    version_id,
                    display_name: w.display_name.clone(),
                    memory_bytes: w.memory_bytes,
                    load_ms: read(&w.stats.load_ms),
                    requests_total: read(&w.stats.requests),
                    inputs_total: read(&w.stats.inputs),
                    batches_total: read(&w.stats.batches),
                    queue_us_total: read(&w.stats.queue_us),
                    compute_us_total: read(&w.stats.compute_us),
                    pinned,
                    in_flight: in_flight as u64,
                }
            })
            .collect();
        let counters = self.models.counters();
        let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(StatusResponse {
            memory_used_bytes: loaded.iter().map(|m| m.memory_bytes).sum(),
            memory_budget_bytes: self.models.budget_bytes(),
            device: device::name(self.models.device()),
            loads_total: self.models.loads_total(),
            cache_hits: read(&counters.hits),
            cache_misses: read(&counters.misses),
            cache_evictions: read(&counters.evictions),
            loaded,
        }))
    }
}
