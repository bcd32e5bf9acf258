//! Loaded models, keyed by version id, weighted by the memory they take on their device,
//! under the runner's budget.
//!
//! - A request holds a [`Lease`] on its model while it runs; a leased model is never evicted.
//! - Before a load, once its files are fetched, room is made for the model (estimated from
//!   its weights' headers, in the type they will take on the device): idle, unpinned models
//!   go, least recently used first. If the busy and pinned ones leave no room, the load waits
//!   for a model to become idle (up to [`ROOM_WAIT`]), then fails with RESOURCE_EXHAUSTED.
//!   Once loaded, the model's real cost replaces the estimate.
//! - Concurrent first requests share one load; a failed load is reported to each of them
//!   and is not remembered: the next request tries again.
//! - Models can be pinned (never evicted), unloaded when idle, and are unloaded after
//!   `idle_ttl` without requests, if one is set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

use crate::artifacts::ArtifactCache;
use crate::blocking;
use crate::device::Placement;
use crate::error::{Error, Result};
use crate::metrics;
use crate::models::ModelFiles;
use crate::template::Renderer;
use crate::worker::{BatchLimits, ModelWorker};
use proto::v1::ModelSpec;

const MIB: u64 = 1024 * 1024;
/// How long a load waits for busy models to free memory.
const ROOM_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

struct Entry {
    worker: Arc<ModelWorker>,
    leases: usize,
    pinned: bool,
    last_used: Instant,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Bytes reserved for loads under way, by version.
    reserved: HashMap<String, u64>,
}

impl State {
    /// Sets `modelgate_runner_memory_used_bytes` to what the loaded models take now.
    fn publish_memory(&self) {
        metrics::MEMORY_USED.set(i64::try_from(self.used()).unwrap_or(i64::MAX));
    }

    fn used(&self) -> u64 {
        self.entries.values().map(|e| e.worker.memory_bytes).sum::<u64>() + self.reserved.values().sum::<u64>()
    }
}

type Load = Shared<BoxFuture<'static, Result<(), Arc<Error>>>>;

struct Inner {
    state: Mutex<State>,
    /// Signalled whenever a lease ends or a model leaves, so waiting loads look again.
    changed: tokio::sync::Notify,
    loading: Mutex<HashMap<String, Load>>,
    artifacts: ArtifactCache,
    placement: Placement,
    limits: BatchLimits,
    models: ModelLimits,
    budget_bytes: u64,
    loads: AtomicU64,
    counters: CacheCounters,
}

#[derive(Clone)]
pub struct ModelCache {
    inner: Arc<Inner>,
}

/// What the runner lets a model take beyond its files' own bounds.
#[derive(Debug, Clone)]
pub struct ModelLimits {
    /// Positions a generation may span at most, whatever the model declares.
    pub max_context: u64,
    /// Where chat templates render.
    pub renderer: Renderer,
}

/// A model held for one request: it cannot be evicted until this is dropped.
pub struct Lease {
    pub worker: Arc<ModelWorker>,
    version_id: String,
    inner: Arc<Inner>,
}

impl std::ops::Deref for Lease {
    type Target = ModelWorker;
    fn deref(&self) -> &ModelWorker {
        &self.worker
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = state.entries.get_mut(&self.version_id) {
            entry.leases = entry.leases.saturating_sub(1);
            entry.last_used = Instant::now();
        }
        drop(state);
        self.inner.changed.notify_waiters();
    }
}

impl ModelCache {
    pub fn new(
        artifacts: ArtifactCache,
        placement: Placement,
        budget_bytes: u64,
        limits: BatchLimits,
        models: ModelLimits,
    ) -> Self {
        let inner = Inner {
            state: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            loading: Mutex::default(),
            artifacts,
            placement,
            limits,
            models,
            budget_bytes,
            loads: AtomicU64::new(0),
            counters: CacheCounters::default(),
        };
        metrics::MEMORY_BUDGET.set(i64::try_from(budget_bytes).unwrap_or(i64::MAX));
        Self { inner: Arc::new(inner) }
    }

    pub fn counters(&self) -> &CacheCounters {
        &self.inner.counters
    }

    /// The loaded model for `spec`, loading it first if needed.
    pub async fn get(&self, spec: &ModelSpec) -> Result<Lease, Arc<Error>> {
        if let Some(lease) = self.lease(&spec.version_id) {
            self.inner.counters.hits.fetch_add(1, Ordering::Relaxed);
            metrics::CACHE_HITS.inc();
            return Ok(lease);
        }
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        metrics::CACHE_MISSES.inc();
        loop {
            self.load_shared(spec).await?;
            // Loaded (by this call or another); it may have gone again before we lease it,
            // when the budget is tight: then load again.
            if let Some(lease) = self.lease(&spec.version_id) {
                return Ok(lease);
            }
        }
    }

    fn lease(&self, version_id: &str) -> Option<Lease> {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = state.entries.get_mut(version_id)?;
        entry.leases += 1;
        entry.last_used = Instant::now();
        Some(Lease { worker: entry.worker.clone(), version_id: version_id.to_owned(), inner: self.inner.clone() })
    }

    /// One load per version at a time, shared by everyone who asks meanwhile.
    async fn load_shared(&self, spec: &ModelSpec) -> Result<(), Arc<Error>> {
        let load = {
            let mut loading = self.inner.loading.lock().unwrap_or_else(PoisonError::into_inner);
            loading
                .entry(spec.version_id.clone())
                .or_insert_with(|| {
                    let (cache, spec) = (self.clone(), spec.clone());
                    async move {
                        let started = Instant::now();
                        let result = cache.load(&spec).await.map_err(Arc::new);
                        let model = [spec.display_name.as_str()];
                        match &result {
                            Ok(()) => metrics::LOAD_DURATION
                                .with_label_values(&model)
                                .observe(started.elapsed().as_secs_f64()),
                            Err(_) => metrics::LOAD_FAILURES.with_label_values(&model).inc(),
                        }
                        cache.inner.loading.lock().unwrap_or_else(PoisonError::into_inner).remove(&spec.version_id);
                        result
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        load.await
    }

    async fn load(&self, spec: &ModelSpec) -> Result<()> {
        self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let local = self.inner.artifacts.fetch_all(&spec.display_name, &spec.files).await?;
        let paths = spec.files.iter().map(|f| f.path.clone()).zip(local).collect();
        let files = ModelFiles { model: spec.display_name.clone(), paths };
        // Admitted from its files' headers before anything is allocated; room for what it will
        // take on the device, in the type its weights will take there.
        let (task, max_context) = (spec.task.clone(), self.inner.models.max_context);
        let (files, admitted) = blocking::run("admitting the model", move || {
            let admitted = files.admit(&task, max_context)?;
            Ok((files, admitted))
        })
        .await?;
        let placement = &self.inner.placement;
        let estimate = admitted.estimate(placement.float_bytes(), placement.device.is_cpu());
        self.make_room(&spec.version_id, &spec.display_name, estimate).await?;
        let loaded = ModelWorker::start(
            spec.display_name.clone(),
            spec.task.clone(),
            files,
            self.inner.placement.clone(),
            self.inner.limits,
            admitted,
            self.inner.models.renderer.clone(),
        )
        .await;
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.reserved.remove(&spec.version_id);
        let worker = match loaded {
            Ok(worker) => worker,
            Err(e) => {
                drop(state);
                self.inner.changed.notify_waiters();
                return Err(e);
            }
        };
        if worker.memory_bytes > self.inner.budget_bytes {
            return Err(self.too_large(&spec.display_name, worker.memory_bytes));
        }
        // The real cost replaces the estimate; make room again if it is larger.
        self.evict_idle(&mut state, worker.memory_bytes);
        let entry = Entry { worker: Arc::new(worker), leases: 0, pinned: false, last_used: Instant::now() };
        state.entries.insert(spec.version_id.clone(), entry);
        state.publish_memory();
        Ok(())
    }

    /// Reserves `bytes` for a load, evicting idle models (least recently used first) and,
    /// if busy ones leave too little, waiting for them.
    async fn make_room(&self, version_id: &str, name: &str, bytes: u64) -> Result<()> {
        if bytes > self.inner.budget_bytes {
            return Err(self.too_large(name, bytes));
        }
        let deadline = Instant::now() + ROOM_WAIT;
        loop {
            let changed = self.inner.changed.notified();
            {
                let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
                if self.evict_idle(&mut state, bytes) {
                    state.reserved.insert(version_id.to_owned(), bytes);
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
                return Err(Error::NoRoom(name.to_owned()));
            }
        }
    }

    /// Evicts idle, unpinned models, least recently used first, until `bytes` more fit;
    /// answers whether they do.
    fn evict_idle(&self, state: &mut State, bytes: u64) -> bool {
        while state.used() + bytes > self.inner.budget_bytes {
            let victim = state
                .entries
                .iter()
                .filter(|(_, e)| e.leases == 0 && !e.pinned)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { return false };
            if let Some(entry) = state.entries.remove(&victim) {
                self.inner.counters.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::CACHE_EVICTIONS.inc();
                tracing::info!(model.name = %entry.worker.display_name, memory_bytes = entry.worker.memory_bytes, "model evicted");
            }
            state.publish_memory();
        }
        true
    }

    fn too_large(&self, name: &str, bytes: u64) -> Error {
        Error::TooLarge {
            model: name.to_owned(),
            needed_mib: bytes.div_ceil(MIB),
            budget_mib: self.inner.budget_bytes / MIB,
        }
    }

    /// Loads a model now (if needed) and optionally pins it.
    pub async fn preload(&self, spec: &ModelSpec, pin: bool) -> Result<(), Arc<Error>> {
        let lease = self.get(spec).await?;
        if pin {
            self.set_pinned(&spec.version_id, true);
        }
        drop(lease);
        Ok(())
    }

    /// Pins or unpins a loaded model; answers whether it is loaded.
    pub fn set_pinned(&self, version_id: &str, pinned: bool) -> bool {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let found = state.entries.get_mut(version_id).map(|e| e.pinned = pinned).is_some();
        drop(state);
        self.inner.changed.notify_waiters();
        found
    }

    /// Unloads a model that serves no request now; answers whether it was loaded, or an
    /// error while it is busy.
    pub fn unload(&self, version_id: &str) -> Result<bool> {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.entries.get(version_id) {
            None => return Ok(false),
            Some(e) if e.leases > 0 => {
                return Err(Error::InvalidRequest(format!(
                    "{} is serving requests; unload it when idle",
                    e.worker.display_name
                )));
            }
            Some(_) => {}
        }
        state.entries.remove(version_id);
        state.publish_memory();
        drop(state);
        self.inner.changed.notify_waiters();
        Ok(true)
    }

    /// Unloads idle, unpinned models unused for `ttl`; runs until dropped.
    pub async fn expire_idle(self, ttl: Duration) {
        let mut every = tokio::time::interval(ttl.min(Duration::from_secs(1)).max(Duration::from_millis(50)));
        loop {
            every.tick().await;
            let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let idle: Vec<String> = state
                .entries
                .iter()
                .filter(|(_, e)| e.leases == 0 && !e.pinned && e.last_used.elapsed() >= ttl)
                .map(|(k, _)| k.clone())
                .collect();
            for version in idle {
                if let Some(entry) = state.entries.remove(&version) {
                    tracing::info!(model.name = %entry.worker.display_name, "model unloaded after its idle time");
                }
            }
            state.publish_memory();
            drop(state);
            self.inner.changed.notify_waiters();
        }
    }

    /// Loaded models: version id, worker, whether pinned, and requests in flight.
    pub fn loaded(&self) -> Vec<(String, Arc<ModelWorker>, bool, usize)> {
        let state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.entries.iter().map(|(k, e)| (k.clone(), e.worker.clone(), e.pinned, e.leases)).collect()
    }

    /// Loads started so far; concurrent first requests for one version count once.
    pub fn loads_total(&self) -> u64 {
        self.inner.loads.load(Ordering::Relaxed)
    }

    pub fn budget_bytes(&self) -> u64 {
        self.inner.budget_bytes
    }

    pub fn device(&self) -> &candle_core::Device {
        &self.inner.placement.device
    }
}
