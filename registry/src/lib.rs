#![doc = include_str!("../README.md")]

pub mod aliases;
pub mod audit;
pub mod changes;
pub mod counts;
pub mod db;
mod error;
pub mod files;
pub mod gc;
pub mod keys;
pub mod limits;
pub mod models;
pub mod names;
pub mod page;
pub mod quarantine;
pub mod sessions;
pub mod storage;
pub mod tenants;
pub mod uploads;
pub mod usage;
pub mod validate;
pub mod versions;

pub use error::{Error, Problem, Result};

use db::Db;
use storage::Storage;

/// Who makes a change: recorded in the audit log and as the `created_by`, `updated_by` or
/// `moved_by` of what it changed.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The id of the API key that acted; `oidc:{issuer}:{subject}` for an external issuer's
    /// token; `system` ([`Actor::system`]) for the gateway's own actions (start-up, GC).
    pub key_id: String,
    pub source_ip: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self { key_id: "system".into(), source_ip: None }
    }
}

/// The registry: metadata in the database, bytes in object storage. One per process.
#[derive(Clone, Debug)]
pub struct Registry {
    db: Db,
    storage: Storage,
    changes: tokio::sync::broadcast::Sender<changes::Change>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Registry {
    pub fn new(db: Db, storage: Storage) -> Self {
        let changes = changes::local_channel(db.url());
        Self { db, storage, changes, generation: Default::default() }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }
}
