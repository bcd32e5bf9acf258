//! Changes to what a model reference resolves to (aliases moved, versions committed or
//! archived, models deleted), announced to every gateway so their resolution caches drop
//! stale answers at once: Postgres `NOTIFY` across processes, and a broadcast inside this
//! process (all that SQLite, one process's database, needs).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::Registry;
use crate::db::Backend;
use crate::models::Model;

const CHANNEL: &str = "modelgate_model_changes";

/// What a resolution cache must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Everything about one model of a tenant.
    Model { tenant_id: String, model: String },
    /// Announcements may have been missed (the listening connection dropped): everything.
    All,
}

impl Change {
    fn of(model: &Model) -> Self {
        Change::Model { tenant_id: model.tenant_id.clone(), model: model.name.as_str().to_owned() }
    }

    fn payload(&self) -> String {
        match self {
            Change::Model { tenant_id, model } => format!("{tenant_id}/{model}"),
            Change::All => String::new(),
        }
    }

    fn parse(payload: &str) -> Self {
        match payload.split_once('/') {
            Some((tenant_id, model)) => Change::Model { tenant_id: tenant_id.to_owned(), model: model.to_owned() },
            None => Change::All,
        }
    }
}

/// The in-process channel of one database: registries of the same database in this process
/// (several gateways in one test process, say) hear each other.
pub(crate) fn local_channel(database: &str) -> broadcast::Sender<Change> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, broadcast::Sender<Change>>>> = OnceLock::new();
    let mut channels = CHANNELS.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    channels.entry(database.to_owned()).or_insert_with(|| broadcast::channel(1024).0).clone()
}

impl Registry {
    /// Announces, inside the transaction that changes `model`, that it changed: Postgres
    /// delivers the notification when (and only if) the transaction commits.
    pub(crate) async fn announce(&self, tx: &mut sqlx::AnyConnection, model: &Model) -> crate::Result<()> {
        if self.db.backend() == Backend::Postgres {
            let payload = Change::of(model).payload();
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// After the change committed: bumps this registry's generation (its own caches see the
    /// change before the caller hears back) and, on SQLite, tells the other registries of this
    /// process (on Postgres the notification reaches every listener).
    pub(crate) fn announced(&self, model: &Model) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.db.backend() == Backend::Sqlite {
            let _ = self.changes.send(Change::of(model));
        }
    }

    /// Counts the changes this registry made: a cached answer older than the last one is stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hands every change announced by any gateway to `on_change`, until the task is
    /// dropped. On Postgres it listens on its own connection and, whenever that connection
    /// is lost and made again, hands over [`Change::All`] for what it may have missed.
    pub async fn follow_changes(self, on_change: impl Fn(Change) + Send + 'static) {
        let mut local = self.changes.subscribe();
        let url = match self.db.backend() {
            Backend::Postgres => self.db.url().to_owned(),
            Backend::Sqlite => String::new(),
        };
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        loop {
            if !url.is_empty() && listener.is_none() {
                match listen(&url).await {
                    Ok(l) => {
                        listener = Some(l);
                        on_change(Change::All);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for model changes; caches rely on their TTL meanwhile");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            change = local.recv() => { if let Some(c) = received(change) { on_change(c) } continue; }
                        }
                    }
                }
            }
            let change = match listener.as_mut() {
                Some(l) => tokio::select! {
                    notification = l.try_recv() => match notification {
                        Ok(Some(n)) => Some(Change::parse(n.payload())),
                        // The connection dropped; sqlx reconnects on the next call.
                        Ok(None) => Some(Change::All),
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the model-change listener; listening again");
                            listener = None;
                            Some(Change::All)
                        }
                    },
                    change = local.recv() => received(change),
                },
                None => received(local.recv().await),
            };
            if let Some(change) = change {
                on_change(change);
            }
        }
    }
}

async fn listen(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// A lagging receiver missed announcements: it forgets everything.
fn received(change: Result<Change, broadcast::error::RecvError>) -> Option<Change> {
    match change {
        Ok(change) => Some(change),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::All),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let change = Change::Model { tenant_id: "0193".into(), model: "minilm".into() };
        assert_eq!(Change::parse(&change.payload()), change);
        assert_eq!(Change::parse(""), Change::All);
    }
}
