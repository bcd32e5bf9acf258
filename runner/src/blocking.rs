//! File work that blocks (reads, hashing, opens) runs on tokio's blocking pool, never on the
//! async runtime's threads, where it would stall every call the runtime serves meanwhile.

use crate::error::{Error, Result};

/// Runs `work` on the blocking pool; `what` names it in the error if the task panics or is
/// cancelled (the runtime shutting down).
pub(crate) async fn run<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|source| Error::Interrupted { what, source })?
}
