//! Usage metering off the request path: requests add to counters in memory, and a task
//! writes them to the database in batches (every `usage_flush_ms`), where they are rolled
//! up into minutes, hours and days.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registry::Registry;
use registry::usage::{MAX_MODEL_LEN, UNRESOLVED_MODEL, UsageCounts, UsageKey, bounded};

/// Tries of the flush at shutdown (waiting 0.1, 0.2, 0.4, 0.8 s between them).
const FINAL_FLUSH_ATTEMPTS: u32 = 5;

#[derive(Default)]
pub struct UsageMeter {
    pending: Mutex<HashMap<UsageKey, UsageCounts>>,
}

/// One inference request, as metered.
pub struct Metered<'a> {
    pub tenant_id: &'a str,
    /// The tenant's name, for the metrics.
    pub tenant: &'a str,
    pub key_id: &'a str,
    pub model: &'a str,
    pub version: i64,
    pub ok: bool,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency: Duration,
}

impl UsageMeter {
    /// Counts one request. One that named no model that exists (version 0) counts under
    /// [`UNRESOLVED_MODEL`], whatever name it sent: a caller's made-up names must not grow the
    /// usage tables or the metrics' series.
    pub fn record(&self, m: Metered<'_>) {
        let now = registry::db::now_ms();
        let model = if m.version == 0 { UNRESOLVED_MODEL } else { bounded(m.model, MAX_MODEL_LEN) };
        let key = UsageKey {
            tenant_id: m.tenant_id.to_owned(),
            key_id: m.key_id.to_owned(),
            model: model.to_owned(),
            version: m.version,
            minute: now - now.rem_euclid(60_000),
        };
        let outcome = if m.ok { "ok" } else { "error" };
        let labels = [m.tenant, model, &m.version.to_string(), outcome];
        crate::metrics::INFERENCE_REQUESTS.with_label_values(&labels).inc();
        crate::metrics::INFERENCE_DURATION.with_label_values(&labels).observe(m.latency.as_secs_f64());
        let latency_ms = i64::try_from(m.latency.as_millis()).unwrap_or(i64::MAX);
        let one = UsageCounts::one(m.ok, m.input_tokens, m.output_tokens, latency_ms);
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default().add(&one);
    }

    /// Writes what was counted; on failure keeps it for the next flush.
    pub async fn flush(&self, registry: &Registry) {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if let Err(e) = registry.record_usage(&batch).await {
            tracing::warn!(error = %e, rows = batch.len(), "writing usage failed; it is kept for the next flush");
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, counts) in batch {
                pending.entry(key).or_default().add(&counts);
            }
        }
    }

    /// Flushes every `every` until `stop` completes, then once more: what was counted up to
    /// then is written, not dropped. Shutdown completes `stop` after the HTTP server has
    /// drained, so requests finished during the drain are counted too.
    pub async fn run(self: Arc<Self>, registry: Registry, every: Duration, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&registry).await,
                () = &mut stop => break,
            }
        }
        // The last chance to write what was counted: a write refused for a moment (a busy
        // SQLite file, a pool at its limit) is tried again, a few times, before giving up.
        let mut wait = Duration::from_millis(100);
        for attempt in 0..FINAL_FLUSH_ATTEMPTS {
            self.flush(&registry).await;
            if self.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                break;
            }
            if attempt + 1 < FINAL_FLUSH_ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        let left = self.pending.lock().unwrap_or_else(PoisonError::into_inner).len();
        if left > 0 {
            tracing::error!(rows = left, "the last usage flush failed; this usage is lost");
        } else {
            tracing::info!("usage flushed");
        }
    }
}
