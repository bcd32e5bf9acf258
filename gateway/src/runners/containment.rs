//! What a gateway does when a runner dies with calls in flight: it names the suspects (the
//! versions of its own calls still unanswered there, and those the runner's last status poll
//! showed busy — other gateways' calls, running generations), blames them by
//! [`blame::blame`], records the strikes in the registry (which quarantines), and answers each
//! lost call from one verdict per death. A lost call is never replayed elsewhere: it may be
//! the call that killed the runner.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use registry::Registry;

use super::blame;
use crate::error::{ApiError, ErrorCode};

/// Calls lost on one runner within this long of the first are lost in the same death.
const SAME_DEATH: Duration = Duration::from_secs(5);

/// The decision on one death, shared by every call lost in it.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    pub(super) suspects: BTreeSet<String>,
    pub(super) quarantined: BTreeSet<String>,
}

#[derive(Default)]
pub(super) struct Containment {
    registry: OnceLock<Registry>,
    /// Per runner: the versions its last good status poll showed busy, and when.
    busy: Mutex<HashMap<String, (Instant, BTreeSet<String>)>>,
    /// Per runner: its last death and the verdict on it.
    deaths: tokio::sync::Mutex<HashMap<String, (Instant, Arc<Verdict>)>>,
}

impl Containment {
    pub(super) fn attach(&self, registry: Registry) {
        let _ = self.registry.set(registry);
    }

    /// Takes in a good status poll: the versions with requests in flight on the runner.
    pub(super) fn saw_busy(&self, address: &str, busy: BTreeSet<String>) {
        let mut all = self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.insert(address.to_owned(), (Instant::now(), busy));
    }

    /// The verdict on the death of the runner at `address`, which a call of `version_id` was
    /// lost in; `outstanding` is this gateway's unanswered calls there (the lost one
    /// included). The first call lost in a death judges it; the others wait for its verdict.
    pub(super) async fn died(
        &self,
        address: &str,
        outstanding: BTreeSet<String>,
        poll_fresh_for: Duration,
    ) -> Arc<Verdict> {
        let mut deaths = self.deaths.lock().await;
        if let Some((at, verdict)) = deaths.get(address)
            && at.elapsed() < SAME_DEATH
        {
            return verdict.clone();
        }
        let mut suspects = outstanding;
        if let Some((at, busy)) = self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(address)
            && at.elapsed() < poll_fresh_for
        {
            suspects.extend(busy.iter().cloned());
        }
        let mut verdict = Verdict { suspects, quarantined: BTreeSet::new() };
        let blamed = blame::blame(&verdict.suspects);
        tracing::error!(
            runner.address = %address,
            suspects = ?verdict.suspects,
            "runner died with calls in flight; its lost calls are not replayed and the versions in flight are blamed"
        );
        for (version, weight) in blamed {
            crate::metrics::VERSION_STRIKES.inc_by(weight.unsigned_abs());
            let Some(registry) = self.registry.get() else { continue };
            let reason = if weight >= blame::QUARANTINE_AT {
                "its runner died while this version alone was loading or computing on it".to_owned()
            } else {
                "its runner died while this version was one of several in flight on it, twice within 10 minutes"
                    .to_owned()
            };
            match registry.strike(&version, weight, &reason).await {
                Ok(struck) => {
                    if struck.newly {
                        crate::metrics::VERSION_QUARANTINES.inc();
                        tracing::error!(model.version_id = %version, strikes = struck.strikes, reason = %reason, "version quarantined");
                    }
                    if struck.quarantined {
                        verdict.quarantined.insert(version);
                    }
                }
                Err(e) => tracing::error!(model.version_id = %version, error = %e, "recording a strike failed"),
            }
        }
        let verdict = Arc::new(verdict);
        deaths.insert(address.to_owned(), (Instant::now(), verdict.clone()));
        verdict
    }
}

/// The call failed before the runner received it (the connection could not be made): the
/// runner was gone already, so the call is no suspect and may go elsewhere.
pub(super) fn never_reached(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The answer to a call lost in a death.
pub(super) fn lost_call(verdict: &Verdict, version_id: &str, status: tonic::Status) -> ApiError {
    if verdict.quarantined.contains(version_id) {
        return ApiError::quarantined("its runner died during this call");
    }
    ApiError::unavailable(
        ErrorCode::RunnerUnavailable,
        "the runner went away during this call; it is not repeated elsewhere in case it was the cause. Try again",
    )
    .with_source(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(versions: &[&str]) -> BTreeSet<String> {
        versions.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn a_refused_connection_never_reached_the_runner_and_a_reset_one_did() {
        let io = |kind| Box::new(std::io::Error::from(kind));
        let refused =
            tonic::Status::from_error(Box::new(tonic::ConnectError(io(std::io::ErrorKind::ConnectionRefused))));
        assert!(never_reached(&refused), "{refused:?}");
        let reset = tonic::Status::from_error(io(std::io::ErrorKind::ConnectionReset));
        assert!(!never_reached(&reset), "{reset:?}");
    }

    #[tokio::test]
    async fn calls_lost_in_one_death_share_one_verdict_which_counts_the_polled_busy_versions() {
        let containment = Containment::default();
        containment.saw_busy("r1", set(&["generating"]));
        let fresh = Duration::from_secs(5);
        let first = containment.died("r1", set(&["a", "b"]), fresh).await;
        let second = containment.died("r1", set(&["b"]), fresh).await;
        assert!(Arc::ptr_eq(&first, &second), "one death, one verdict");
        assert_eq!(first.suspects, set(&["a", "b", "generating"]));
        let elsewhere = containment.died("r2", set(&["a"]), fresh).await;
        assert_eq!(elsewhere.suspects, set(&["a"]), "another runner's death is judged on its own");
        containment.saw_busy("r3", set(&["stale"]));
        let stale = containment.died("r3", set(&["c"]), Duration::ZERO).await;
        assert_eq!(stale.suspects, set(&["c"]), "a poll older than its freshness is not used");
    }
}
