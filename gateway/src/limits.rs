//! Request limits, enforced across every gateway that shares the database.
//!
//! - Requests per minute count in calendar-minute windows kept in the database. A gateway
//!   takes a lease of a few units at a time (a twentieth of the limit) and admits from it;
//!   leases never add up past the limit, so gateways together never exceed it, and a restart
//!   loses at most a lease (it never resets a tenant's minute).
//! - Concurrent requests are split evenly between the gateways alive (each records a
//!   heartbeat every second), so the sum holds whatever gateway a client reaches.
//!
//! Every limit that applies (the tenant's and the key's) must admit a request; the refusal
//! names the limit, and its `Retry-After` is when that limit admits again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use registry::Registry;
use registry::db::now_ms;
use serde_json::json;

use crate::auth::{Principal, Scope};
use crate::error::ApiError;

const WINDOW_MS: i64 = 60_000;

pub struct Limiter {
    registry: Registry,
    instance: String,
    live_gateways: AtomicI64,
    /// Per-minute scope -> what this gateway may still admit in the current window.
    leases: Mutex<HashMap<String, Lease>>,
    /// Concurrency scope -> requests in flight on this gateway.
    in_flight: Arc<Mutex<HashMap<String, i64>>>,
}

#[derive(Clone, Copy)]
struct Lease {
    window_start: i64,
    left: i64,
}

/// Held while a request runs; gives its concurrency slots back when dropped.
pub struct Permit {
    in_flight: Arc<Mutex<HashMap<String, i64>>>,
    scopes: Vec<String>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for scope in &self.scopes {
            if let Some(n) = in_flight.get_mut(scope) {
                *n -= 1;
                if *n <= 0 {
                    in_flight.remove(scope);
                }
            }
        }
    }
}

/// One limit that applies to a request.
struct Check {
    scope: String,
    /// `the tenant's` or `the key's`.
    owner: &'static str,
    name: &'static str,
    limit: i64,
}

struct Refusal {
    message: String,
    retry_after_secs: u64,
    limit: i64,
    name: &'static str,
    owner: &'static str,
}

impl Limiter {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            instance: registry::db::new_id(),
            live_gateways: AtomicI64::new(1),
            leases: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Records this gateway as alive every second (and learns how many are), until dropped.
    pub async fn heartbeat(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match self.registry.gateway_heartbeat(&self.instance).await {
                Ok(live) => self.live_gateways.store(live, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "recording the gateway's heartbeat failed"),
            }
        }
    }

    /// Admits a request of `principal` under every limit that applies, or answers 429 naming
    /// the limit. Platform admins are not limited.
    pub async fn admit(&self, principal: &Principal) -> Result<Option<Permit>, ApiError> {
        let Scope::Tenant { tenant, .. } = &principal.scope else { return Ok(None) };
        let tenant_limits = tenant.limits;
        let key_limits = principal.limits;
        if tenant_limits.requests_per_minute.is_none()
            && tenant_limits.concurrent_requests.is_none()
            && key_limits.requests_per_minute.is_none()
            && key_limits.concurrent_requests.is_none()
        {
            return Ok(None);
        }
        let owners = [
            ("the tenant's", format!("t:{}", tenant.id), tenant_limits),
            ("the key's", format!("k:{}", principal.key_id), key_limits),
        ];
        let mut per_minute = Vec::new();
        let mut concurrent = Vec::new();
        for (owner, scope, limits) in &owners {
            if let Some(limit) = limits.requests_per_minute {
                per_minute.push(Check { scope: format!("{scope}:rpm"), owner, name: "requests_per_minute", limit });
            }
            if let Some(limit) = limits.concurrent_requests {
                concurrent.push(Check {
                    scope: format!("{scope}:concurrent"),
                    owner,
                    name: "concurrent_requests",
                    limit,
                });
            }
        }
        let now = now_ms();
        let mut refusals = Vec::new();
        let live = self.live_gateways.load(Ordering::Relaxed).max(1);
        {
            let in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for check in &concurrent {
                let share = (check.limit + live - 1) / live;
                if in_flight.get(&check.scope).copied().unwrap_or(0) >= share {
                    refusals.push(Refusal {
                        message: format!(
                            "{} {} limit ({}) is reached: wait for a request to finish",
                            check.owner, check.name, check.limit
                        ),
                        retry_after_secs: 1,
                        limit: check.limit,
                        name: check.name,
                        owner: check.owner,
                    });
                }
            }
        }
        let window_start = now - now.rem_euclid(WINDOW_MS);
        let retry_after_secs = u64::try_from((window_start + WINDOW_MS - now + 999) / 1000).unwrap_or(60).max(1);
        let mut reserved = Vec::new();
        for check in &per_minute {
            if self.reserve(check, window_start).await? {
                reserved.push(check);
            } else {
                refusals.push(Refusal {
                    message: format!(
                        "{} {} limit ({}) is used up for this minute; retry in {retry_after_secs} s",
                        check.owner, check.name, check.limit
                    ),
                    retry_after_secs,
                    limit: check.limit,
                    name: check.name,
                    owner: check.owner,
                });
            }
        }
        // Every limit must admit; the one reported is the one that admits last.
        if !refusals.is_empty() {
            self.give_back(&reserved, window_start);
        }
        if let Some(refusal) = refusals.into_iter().max_by_key(|r| (r.retry_after_secs, -r.limit)) {
            let details = json!({ "limit": refusal.name, "of": refusal.owner.trim_start_matches("the ").trim_end_matches("'s"), "value": refusal.limit });
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", refusal.message)
                .with_details(details)
                .retry_after(refusal.retry_after_secs));
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for check in &concurrent {
            *in_flight.entry(check.scope.clone()).or_insert(0) += 1;
        }
        let scopes = concurrent.into_iter().map(|c| c.scope).collect();
        Ok(Some(Permit { in_flight: self.in_flight.clone(), scopes }))
    }

    /// Takes one unit from this gateway's lease of the window, taking a new lease from the
    /// database when it is empty; false when the window is used up.
    async fn reserve(&self, check: &Check, window_start: i64) -> Result<bool, ApiError> {
        if self.take_one(check, window_start, 0) {
            return Ok(true);
        }
        let chunk = (check.limit / 20).max(1);
        let granted = self.registry.take_from_window(&check.scope, window_start, chunk, check.limit).await?;
        Ok(self.take_one(check, window_start, granted))
    }

    /// Adds `granted` to the lease, then takes one unit from it if it has one.
    fn take_one(&self, check: &Check, window_start: i64, granted: i64) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lease = leases.entry(check.scope.clone()).or_insert(Lease { window_start, left: 0 });
        if lease.window_start != window_start {
            *lease = Lease { window_start, left: 0 };
        }
        lease.left += granted;
        if lease.left > 0 {
            lease.left -= 1;
            true
        } else {
            false
        }
    }

    /// Returns units a refused request had reserved.
    fn give_back(&self, reserved: &[&Check], window_start: i64) {
        let mut leases = self.leases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for check in reserved {
            if let Some(lease) = leases.get_mut(&check.scope).filter(|l| l.window_start == window_start) {
                lease.left += 1;
            }
        }
    }
}
