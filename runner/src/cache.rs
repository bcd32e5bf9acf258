//! Loaded models, keyed by version id, weighted by the memory their tensors take,
//! under the runner's budget. Concurrent first requests share one load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;
use moka::future::Cache;

use crate::artifacts::ArtifactCache;
use crate::error::{Error, Result};
use crate::models::ModelFiles;
use crate::worker::{BatchLimits, ModelWorker};
use proto::v1::ModelSpec;

const KIB: u64 = 1024;

#[derive(Clone)]
pub struct ModelCache {
    models: Cache<String, Arc<ModelWorker>>,
    artifacts: ArtifactCache,
    device: Device,
    limits: BatchLimits,
    budget_bytes: u64,
    loads: Arc<AtomicU64>,
    pub counters: Arc<CacheCounters>,
}

#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

impl ModelCache {
    pub fn new(artifacts: ArtifactCache, device: Device, budget_bytes: u64, limits: BatchLimits) -> Self {
        let counters = Arc::new(CacheCounters::default());
        let evictions = counters.clone();
        let models = Cache::builder()
            .max_capacity(budget_bytes / KIB)
            .weigher(|_, worker: &Arc<ModelWorker>| {
                u32::try_from(worker.memory_bytes.div_ceil(KIB)).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |version, worker, cause| {
                if cause.was_evicted() {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(model.version_id = %version, model.name = %worker.display_name, ?cause, "model evicted");
            })
            .build();
        Self { models, artifacts, device, limits, budget_bytes, loads: Arc::default(), counters }
    }

    /// The loaded model for `spec`, loading it first if needed (one load for all waiters;
    /// a failed load is reported to each of them and not cached).
    pub async fn get(&self, spec: &ModelSpec) -> Result<Arc<ModelWorker>, Arc<Error>> {
        if let Some(worker) = self.models.get(&spec.version_id).await {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(worker);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.models.try_get_with(spec.version_id.clone(), self.load(spec)).await
    }

    async fn load(&self, spec: &ModelSpec) -> Result<Arc<ModelWorker>> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        let local = self.artifacts.fetch_all(&spec.display_name, &spec.files).await?;
        let paths = spec.files.iter().map(|f| f.path.clone()).zip(local).collect();
        let files = ModelFiles { model: spec.display_name.clone(), paths };
        let worker =
            ModelWorker::start(spec.display_name.clone(), spec.task.clone(), files, self.device.clone(), self.limits)
                .await?;
        if worker.memory_bytes > self.budget_bytes {
            return Err(Error::TooLarge {
                model: spec.display_name.clone(),
                needed_mib: worker.memory_bytes.div_ceil(KIB * KIB),
                budget_mib: self.budget_bytes / (KIB * KIB),
            });
        }
        Ok(Arc::new(worker))
    }

    pub async fn loaded(&self) -> Vec<(String, Arc<ModelWorker>)> {
        self.models.run_pending_tasks().await;
        self.models.iter().map(|(k, v)| (k.as_ref().clone(), v)).collect()
    }

    /// Loads started so far; concurrent first requests for one version count once.
    pub fn loads_total(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}
