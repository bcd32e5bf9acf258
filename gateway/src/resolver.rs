//! Model references resolved to ready versions, cached: an inference request reads no
//! database once its reference has been seen. Every change a gateway makes is announced
//! (Postgres NOTIFY, or in-process on SQLite) and drops the model's entries on every gateway
//! at once; the TTL is the safety net for an announcement lost with its connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use registry::Registry;
use registry::aliases::pick_version;
use registry::changes::Change;
use registry::models::Model;
use registry::names::ModelRef;
use registry::quarantine::Quarantine;
use registry::versions::Version;

/// (tenant id, model name, the reference as asked).
type Key = (String, String, String);

struct Targets {
    model: Model,
    versions: Vec<(i64, Version)>,
    /// Those of `versions` that are quarantined. A quarantine is announced as a change of its
    /// model, so it drops this entry on every gateway.
    quarantined: HashMap<String, Quarantine>,
    /// The registry's generation when read: a change this gateway made since makes it stale.
    generation: u64,
}

#[derive(Clone)]
pub struct Resolver {
    cache: Cache<Key, Arc<Targets>>,
    /// Bumped by every announced change: an answer read before one is not cached after it.
    generation: Arc<AtomicU64>,
}

impl Resolver {
    pub fn new(ttl: Duration) -> Self {
        let cache = Cache::builder().max_capacity(100_000).time_to_live(ttl).support_invalidation_closures().build();
        Self { cache, generation: Arc::default() }
    }

    /// The model and the ready version `reference` names in the tenant now; an alias split
    /// over several versions picks one by weight on every call. A quarantined version is an
    /// error ([`registry::Error::Quarantined`]).
    pub async fn resolve(
        &self,
        registry: &Registry,
        tenant_id: &str,
        reference: &ModelRef,
        requested: &str,
    ) -> registry::Result<(Model, Version)> {
        let key = (tenant_id.to_owned(), reference.model_name().as_str().to_owned(), requested.to_owned());
        let targets = match self.cache.get(&key).await.filter(|t| t.generation == registry.generation()) {
            Some(targets) => targets,
            None => {
                let (generation, own) = (self.generation.load(Ordering::Acquire), registry.generation());
                let (model, versions) = registry.resolve_targets(tenant_id, reference).await?;
                let mut quarantined = HashMap::new();
                for (_, version) in &versions {
                    if let Some(q) = registry.quarantine(&version.id).await? {
                        quarantined.insert(version.id.clone(), q);
                    }
                }
                let targets = Arc::new(Targets { model, versions, quarantined, generation: own });
                if self.generation.load(Ordering::Acquire) == generation {
                    self.cache.insert(key, targets.clone()).await;
                }
                targets
            }
        };
        let version = pick_version(&targets.versions, rand::random_range(0..100))
            .ok_or_else(|| registry::Error::not_found("ready version of model", &targets.model.name))?;
        if let Some(q) = targets.quarantined.get(&version.id) {
            return Err(registry::Error::Quarantined(Box::new(q.clone())));
        }
        Ok((targets.model.clone(), version.clone()))
    }

    /// Forgets what `change` makes stale.
    pub fn forget(&self, change: &Change) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::All => self.cache.invalidate_all(),
            Change::Model { tenant_id, model } => {
                let (tenant_id, model) = (tenant_id.clone(), model.clone());
                // Only fails when the builder lacks invalidation closures, which it has.
                let _ = self.cache.invalidate_entries_if(move |(t, m, _), _| *t == tenant_id && *m == model);
            }
        }
    }

    /// Follows the registry's announcements until the task is dropped.
    pub async fn follow(self, registry: Registry) {
        registry.follow_changes(move |change| self.forget(&change)).await;
    }
}
