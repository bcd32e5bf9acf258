//! Schemas of the answers handlers write as JSON values rather than as registry types: OpenAI's
//! and KServe's shapes, tokens, runner status. They are only described here, never built, so CI
//! checks them against real answers: schemathesis calls every operation of the served document
//! and validates each answer against its schema (`tests/e2e/openapi.rs`).

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `{"error": {...}}`: every answer that is not a success (but KServe's, below).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    /// Stable and machine-readable: `not_found`, `rate_limited`, `validation_failed`, …
    code: String,
    /// What went wrong, for a person.
    message: String,
    /// OpenAI's error type for the status (`invalid_request_error`, `rate_limit_error`, …).
    r#type: String,
    /// More, where the error has it: a commit's problems per file, a readiness check's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

/// KServe's error shape, which its handlers answer: `{"error": "message"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct KServeError {
    error: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(example = "ok")]
    status: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    #[schema(example = "ready")]
    status: String,
    checks: ReadinessChecks,
}

/// Also the `details` of the 503 answered while not ready.
#[derive(Serialize, ToSchema)]
struct ReadinessChecks {
    /// `ok` or `unavailable`.
    database: String,
    /// `ok` or `unavailable`.
    storage: String,
    runners: RunnersReachable,
}

#[derive(Serialize, ToSchema)]
struct RunnersReachable {
    reachable: u64,
    configured: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Token {
    /// A JWT; send it as `Authorization: Bearer …`.
    token: String,
    #[schema(example = "Bearer")]
    token_type: String,
    /// Seconds since the epoch.
    expires_at: i64,
    expires_in: i64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct WhoAmI {
    key_id: String,
    /// The key's tenant; null for a platform admin.
    tenant: Option<String>,
    /// `platform_admin`, `admin`, `developer`, `invoker` or `viewer`.
    role: String,
    /// `api_key` or `token`.
    credential: String,
    limits: registry::limits::Limits,
}

/// A JSON Web Key Set (RFC 7517) of Ed25519 public keys.
#[derive(Serialize, ToSchema)]
pub(crate) struct Jwks {
    keys: Vec<Value>,
}

/// A key as listed, and its secret: shown in this answer only.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    listed: registry::keys::ApiKey,
    /// The secret (`mg_…`).
    key: String,
    /// The key's tenant.
    tenant: String,
}

/// A model and the aliases that point into it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelWithAliases {
    #[serde(flatten)]
    model: registry::models::Model,
    aliases: Vec<registry::aliases::Alias>,
}

/// A tenant's limits and stored bytes (`registry::tenants::StorageUsage`: its limits are
/// flattened, which utoipa cannot describe next to their `deny_unknown_fields`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Quotas {
    /// Bytes of distinct blobs stored (identical files count once).
    used_bytes: i64,
    quota_bytes: Option<i64>,
    requests_per_minute: Option<i64>,
    concurrent_requests: Option<i64>,
    /// Tokens generated per minute (text generation).
    tokens_per_minute: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UsageReport {
    tenant: String,
    /// `minute`, `hour` or `day`.
    step: String,
    /// `model`, `version` or `key`, when asked.
    group_by: Option<String>,
    /// Upper bounds of `latency_buckets`; the last bucket counts slower requests.
    latency_buckets_ms: Vec<i64>,
    data: Vec<registry::usage::UsagePoint>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RunnerList {
    data: Vec<RunnerStatus>,
}

/// A runner's state, or the error that hid it (`error` set, `healthy` false).
#[derive(Serialize, ToSchema)]
struct RunnerStatus {
    /// gRPC address.
    address: String,
    healthy: bool,
    circuit_open: bool,
    error: Option<String>,
    /// `cpu` or `cuda:N`.
    device: Option<String>,
    memory_used_bytes: Option<u64>,
    memory_budget_bytes: Option<u64>,
    loads_total: Option<u64>,
    cache: Option<RunnerCache>,
    models: Option<Vec<LoadedModel>>,
}

#[derive(Serialize, ToSchema)]
struct RunnerCache {
    hits: u64,
    misses: u64,
    evictions: u64,
}

#[derive(Serialize, ToSchema)]
struct LoadedModel {
    version_id: String,
    /// `tenant/model@N`.
    name: String,
    memory_bytes: u64,
    pinned: bool,
    in_flight: u64,
    load_ms: u64,
    requests_total: u64,
    inputs_total: u64,
    batches_total: u64,
    queue_ms_total: u64,
    compute_ms_total: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Loaded {
    /// The runner that holds it now.
    runner: String,
    memory_bytes: u64,
    pinned: bool,
}

/// One entry per runner: whether the version was unloaded (or was loaded, for pin), or why the
/// runner could not say.
#[derive(Serialize, ToSchema)]
pub(crate) struct PerRunner {
    data: Vec<Value>,
}

/// OpenAI's model list.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    #[schema(example = "list")]
    object: String,
    data: Vec<OpenAiModel>,
}

#[derive(Serialize, ToSchema)]
struct OpenAiModel {
    /// `model`, or `model:alias`.
    id: String,
    #[schema(example = "model")]
    object: String,
    /// Seconds since the epoch.
    created: i64,
    /// The tenant.
    owned_by: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Embeddings {
    #[schema(example = "list")]
    object: String,
    data: Vec<Embedding>,
    model: String,
    usage: PromptUsage,
}

#[derive(Serialize, ToSchema)]
struct Embedding {
    #[schema(example = "embedding")]
    object: String,
    index: u64,
    /// An array of numbers, or base64 when asked.
    embedding: Value,
}

#[derive(Serialize, ToSchema)]
struct PromptUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Classifications {
    #[schema(example = "list")]
    object: String,
    data: Vec<Classification>,
    model: String,
    usage: PromptUsage,
}

#[derive(Serialize, ToSchema)]
struct Classification {
    #[schema(example = "classification")]
    object: String,
    index: u64,
    /// The best label and its score.
    label: String,
    score: f32,
    /// Every label, best first.
    scores: Vec<LabelScore>,
}

#[derive(Serialize, ToSchema)]
struct LabelScore {
    label: String,
    score: f32,
}

/// A completion (`text_completion`) or chat completion (`chat.completion`); with `stream`, the
/// same as server-sent events of chunks.
#[derive(Serialize, ToSchema)]
pub(crate) struct Completion {
    id: String,
    object: String,
    created: i64,
    model: String,
    /// `{index, text, finish_reason, logprobs}`, or `{index, message, finish_reason, logprobs}`.
    choices: Vec<Value>,
    usage: CompletionUsage,
}

#[derive(Serialize, ToSchema)]
struct CompletionUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeLive {
    live: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeReady {
    ready: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeServer {
    name: String,
    version: String,
    extensions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeModelReady {
    name: String,
    ready: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeMetadata {
    name: String,
    versions: Vec<String>,
    platform: String,
    inputs: Vec<KServeTensorMetadata>,
    outputs: Vec<KServeTensorMetadata>,
}

#[derive(Serialize, ToSchema)]
struct KServeTensorMetadata {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
struct KServeTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeInferResponse {
    id: Option<String>,
    model_name: String,
    model_version: String,
    outputs: Vec<KServeTensor>,
}

/// `text_input` and sampling parameters, under `parameters` or at the top level.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"text_input": "Once upon a time", "parameters": {"max_tokens": 8, "temperature": 0}}))]
pub(crate) struct KServeGenerateRequest {
    text_input: String,
    parameters: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct KServeGenerateResponse {
    model_name: String,
    model_version: String,
    text_output: String,
}

/// Hugging Face Hub's model info: `siblings` are the revision's files.
#[derive(Serialize, ToSchema)]
pub(crate) struct HubModelInfo {
    #[serde(rename = "_id")]
    commit: String,
    id: String,
    #[serde(rename = "modelId")]
    model_id: String,
    /// The revision's 40-hex-digit commit.
    sha: String,
    private: bool,
    disabled: bool,
    gated: bool,
    tags: Vec<String>,
    pipeline_tag: String,
    library_name: String,
    siblings: Vec<Value>,
}

/// Hugging Face Hub's tree entry: a file (with `lfs`) or a directory.
#[derive(Serialize, ToSchema)]
pub(crate) struct HubTreeEntry {
    /// `file` or `directory`.
    r#type: String,
    oid: String,
    size: u64,
    path: String,
    lfs: Option<Value>,
}

/// A file's bytes.
#[derive(Serialize, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct Binary(Vec<u8>);

/// With `?presigned=true`: a short-lived URL straight to the bucket instead of the bytes.
#[derive(Serialize, ToSchema)]
pub(crate) struct PresignedDownload {
    url: String,
    expires_in: u64,
    sha256: String,
}

/// One server-sent event of a streamed answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct SseEvent {
    /// A JSON chunk; OpenAI's streams end with `[DONE]`.
    data: String,
}

/// A version (as the registry lists it) with `quarantine`.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionWithQuarantine {
    #[serde(flatten)]
    version: registry::versions::Version,
    /// Set while the version is quarantined (its calls took runners down), else null.
    quarantine: Option<registry::quarantine::Quarantine>,
}
