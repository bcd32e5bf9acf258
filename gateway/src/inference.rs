//! The inference core, which every protocol (OpenAI, KServe v2) goes through: a [`Call`]
//! resolves the caller's reference to a ready version of its own tenant, builds the spec a
//! runner needs, calls the pool, and meters itself when dropped, whatever happened: answered,
//! failed, or left by its client mid-stream. Protocol files parse their request and shape the
//! answer; they never resolve, call a runner or meter on their own.

use std::time::Instant;

use actix_web::web;
use futures::StreamExt as _;
use proto::v1::{ClassifyResponse, EmbedResponse, GenerateChunk, GenerateRequest, ModelFile, ModelSpec};
use registry::Registry;
use registry::models::Model;
use registry::names::{ModelRef, Role, Task};
use registry::tenants::Tenant;
use registry::versions::Version;

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::runners::Generation;
use crate::usage::Metered;

/// Names the version that answered (`acme/minilm@3`), so canary splits can be observed.
pub const SERVED_BY: &str = "x-modelgate-version";

/// What a runner needs to serve `version` of `model`: its files with digests and object paths.
pub fn spec(registry: &Registry, tenant: &Tenant, model: &Model, version: &Version) -> ModelSpec {
    let storage = registry.storage();
    ModelSpec {
        version_id: version.id.clone(),
        display_name: format!("{}/{}@{}", tenant.name, model.name, version.number),
        architecture: version.architecture.clone().unwrap_or_default(),
        task: model.task.as_str().to_owned(),
        files: version
            .files
            .iter()
            .map(|f| ModelFile {
                path: f.path.to_string(),
                sha256: f.digest.to_string(),
                size: f.size,
                object_path: storage.blob_path(&tenant.id, &f.digest).to_string(),
            })
            .collect(),
        tenant_id: tenant.id.clone(),
    }
}

/// The version a call resolved to.
pub struct Target {
    pub spec: ModelSpec,
    pub task: Task,
}

impl Target {
    /// `tenant/model@version`, for the [`SERVED_BY`] header.
    pub fn served_by(&self) -> String {
        self.spec.display_name.clone()
    }
}

/// One inference call of a tenant's invoker. Dropped, it records its usage (failed unless it
/// [`succeeded`](Call::succeeded)) and counts its generated tokens against the limits.
pub struct Call {
    state: web::Data<AppState>,
    principal: Principal,
    tenant: Tenant,
    started: Instant,
    /// The reference as asked, then the model it resolved to.
    model: String,
    version: i64,
    ok: bool,
    input_tokens: u32,
    output_tokens: u32,
}

impl Call {
    /// Starts a metered call of `requested`; the principal must be an invoker of its tenant.
    pub fn start(state: &web::Data<AppState>, principal: &Principal, requested: &str) -> Result<Self, ApiError> {
        let tenant = principal.own_tenant(Role::Invoker)?.clone();
        Ok(Self {
            state: state.clone(),
            principal: principal.clone(),
            tenant,
            started: Instant::now(),
            model: requested.to_owned(),
            version: 0,
            ok: false,
            input_tokens: 0,
            output_tokens: 0,
        })
    }

    /// The version number the call resolved to (0 before).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Marks the call answered: it is metered as a success.
    pub fn succeeded(&mut self) {
        self.ok = true;
    }

    /// The ready version `requested` (`model`, `model:alias`, `model@version`) names in the
    /// caller's tenant: 404 `model_not_found` when there is none, 400 when `task` is given and
    /// the model does another. A quarantined version answers 503 `version_quarantined`.
    pub async fn resolve(&mut self, requested: &str, task: Option<Task>) -> Result<Target, ApiError> {
        let not_found = || {
            ApiError::new(
                ErrorCode::ModelNotFound,
                // A made-up name may be of any length; the answer names at most its start.
                match registry::usage::bounded(requested, registry::usage::MAX_MODEL_LEN) {
                    shown if shown.len() < requested.len() => {
                        format!("model {shown:?}… ({} bytes) does not exist", requested.len())
                    }
                    _ => format!("model {requested:?} does not exist"),
                },
            )
        };
        let reference = ModelRef::parse(requested).map_err(|_| not_found())?;
        let state = &self.state;
        let (model, version) =
            state.resolver.resolve(&state.registry, &self.tenant.id, &reference, requested).await.map_err(
                |e| match e {
                    registry::Error::NotFound { .. } => not_found(),
                    e => e.into(),
                },
            )?;
        self.model = model.name.to_string();
        self.version = version.number;
        if let Some(task) = task.filter(|t| *t != model.task) {
            return Err(ApiError::invalid(format!(
                "model {requested:?} is a {} model; this endpoint serves {} models",
                model.task.as_str(),
                task.as_str()
            )));
        }
        Ok(Target { spec: spec(&state.registry, &self.tenant, &model, &version), task: model.task })
    }

    /// Embeds `texts`; their tokens count as the call's input.
    pub async fn embed(&mut self, target: Target, texts: Vec<String>) -> Result<EmbedResponse, ApiError> {
        let answer = self.state.runners.embed(target.spec, texts).await?;
        self.input_tokens = answer.embeddings.iter().map(|e| e.tokens).sum();
        Ok(answer)
    }

    /// Scores `texts` with every label; their tokens count as the call's input.
    pub async fn classify(&mut self, target: Target, texts: Vec<String>) -> Result<ClassifyResponse, ApiError> {
        let answer = self.state.runners.classify(target.spec, texts).await?;
        self.input_tokens = answer.results.iter().map(|r| r.tokens).sum();
        Ok(answer)
    }

    /// Starts generating; the call rides with the chunks and is metered when they end or are
    /// dropped (a departed client, which also stops the generation on its runner).
    pub async fn generate(self, target: Target, mut request: GenerateRequest) -> Result<Generated, ApiError> {
        request.model = Some(target.spec);
        let chunks = self.state.runners.generate(request).await?;
        Ok(Generated { chunks, call: self, progress: Progress::default(), failed: false })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let state = &self.state;
        state.usage.record(Metered {
            tenant_id: &self.tenant.id,
            tenant: self.tenant.name.as_str(),
            key_id: &self.principal.key_id,
            model: &self.model,
            version: self.version,
            ok: self.ok,
            input_tokens: i64::from(self.input_tokens),
            output_tokens: i64::from(self.output_tokens),
            latency: self.started.elapsed(),
        });
        if self.output_tokens > 0 {
            let (state, principal, n) = (state.clone(), self.principal.clone(), i64::from(self.output_tokens));
            tokio::spawn(async move {
                if let Err(e) = state.limiter.record_tokens(&principal, n).await {
                    tracing::warn!(error = %e, "counting generated tokens against the limits failed");
                }
            });
        }
    }
}

/// What a generation produced so far.
#[derive(Default)]
pub struct Progress {
    pub text: String,
    pub finish_reason: Option<String>,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A generation's chunks with the call that meters them.
pub struct Generated {
    chunks: Generation,
    call: Call,
    progress: Progress,
    failed: bool,
}

impl Generated {
    /// The next chunk. The call succeeds when a chunk finishes the generation, or the runner
    /// ends the stream without an error.
    pub async fn next(&mut self) -> Option<Result<GenerateChunk, ApiError>> {
        let next = self.chunks.next().await;
        match &next {
            Some(Ok(chunk)) => {
                let progress = &mut self.progress;
                progress.text.push_str(&chunk.text);
                if !chunk.finish_reason.is_empty() {
                    progress.finish_reason = Some(chunk.finish_reason.clone());
                    self.call.ok = true;
                }
                progress.prompt_tokens = progress.prompt_tokens.max(chunk.prompt_tokens);
                progress.completion_tokens = progress.completion_tokens.max(chunk.completion_tokens);
                (self.call.input_tokens, self.call.output_tokens) =
                    (progress.prompt_tokens, progress.completion_tokens);
            }
            Some(Err(_)) => (self.failed, self.call.ok) = (true, false),
            None => self.call.ok = !self.failed,
        }
        next
    }

    /// Reads the generation to its end.
    pub async fn finish(mut self) -> Result<Progress, ApiError> {
        while let Some(chunk) = self.next().await {
            chunk?;
        }
        Ok(std::mem::take(&mut self.progress))
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }
}
