//! Request limits, enforced across every gateway that shares the database.
//!
//! - Requests per minute count in calendar-minute windows kept in the database. A gateway
//!   takes a lease of a few units at a time (a twentieth of the limit) and admits from it;
//!   leases never add up past the limit, so gateways together never exceed it, and a restart
//!   loses at most a lease (it never resets a tenant's minute).
//! - Concurrent requests are split evenly between the gateways alive (each records a
//!   heartbeat every second), so the sum holds whatever gateway a client reaches.
//! - Generated tokens per minute are known only once generated: they are added to the same
//!   kind of window when a generation ends, and a request is admitted while the minute's
//!   count (as this gateway last read it, at most half a second ago) is under the limit.
//!
//! Every limit that applies (the tenant's and the key's) must admit a request; the refusal
//! names the limit, and its `Retry-After` is when that limit admits again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry::Registry;
use registry::db::now_ms;
use registry::limits::Limits;
use serde_json::json;

use crate::auth::{Principal, Scope};
use crate::error::{ApiError, ErrorCode};

const WINDOW_MS: i64 = 60_000;

pub struct Limiter {
    registry: Registry,
    instance: String,
    live_gateways: AtomicI64,
    /// Per-minute scope -> what this gateway may still admit in the current window.
    leases: Mutex<HashMap<String, Lease>>,
    /// Concurrency scope -> requests in flight on this gateway.
    in_flight: Arc<Mutex<HashMap<String, i64>>>,
    /// Tokens-per-minute scope -> the window's count as last read.
    tokens: Mutex<HashMap<String, TokenCount>>,
}

#[derive(Clone, Copy)]
struct TokenCount {
    window_start: i64,
    used: i64,
    read_at: i64,
}

/// How stale a tokens-per-minute count may be before it is read again.
const TOKEN_COUNT_TTL_MS: i64 = 500;

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
            tokens: Mutex::new(HashMap::new()),
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
        if tenant_limits == Limits::default() && key_limits == Limits::default() {
            return Ok(None);
        }
        let owners = [
            ("the tenant's", format!("t:{}", tenant.id), tenant_limits),
            ("the key's", format!("k:{}", principal.key_id), key_limits),
        ];
        let mut per_minute = Vec::new();
        let mut concurrent = Vec::new();
        let mut token_checks = Vec::new();
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
            if let Some(limit) = limits.tokens_per_minute {
                token_checks.push(Check { scope: format!("{scope}:tpm"), owner, name: "tokens_per_minute", limit });
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
        for check in &token_checks {
            if self.tokens_used(&check.scope, window_start, now).await? >= check.limit {
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
            crate::metrics::LIMIT_REJECTIONS.with_label_values(&[tenant.name.as_str(), refusal.name]).inc();
            let details = json!({ "limit": refusal.name, "of": refusal.owner.trim_start_matches("the ").trim_end_matches("'s"), "value": refusal.limit });
            return Err(ApiError::new(ErrorCode::RateLimited, refusal.message)
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

    /// Counts `n` generated tokens against the tokens-per-minute limits of the principal and
    /// its tenant (those that have one).
    pub async fn record_tokens(&self, principal: &Principal, n: i64) -> Result<(), ApiError> {
        let Scope::Tenant { tenant, .. } = &principal.scope else { return Ok(()) };
        let now = now_ms();
        let window_start = now - now.rem_euclid(WINDOW_MS);
        let scopes = [
            (tenant.limits.tokens_per_minute, format!("t:{}:tpm", tenant.id)),
            (principal.limits.tokens_per_minute, format!("k:{}:tpm", principal.key_id)),
        ];
        for (_, scope) in scopes.iter().filter(|(limit, _)| limit.is_some()) {
            let used = self.registry.add_to_window(scope, window_start, n).await?;
            let count = TokenCount { window_start, used, read_at: now };
            self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(scope.clone(), count);
        }
        Ok(())
    }

    /// The window's token count, read again when the last reading is stale.
    async fn tokens_used(&self, scope: &str, window_start: i64, now: i64) -> Result<i64, ApiError> {
        let known = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(scope).copied();
        if let Some(count) = known.filter(|c| c.window_start == window_start && now - c.read_at < TOKEN_COUNT_TTL_MS) {
            return Ok(count.used);
        }
        let used = self.registry.window_used(scope, window_start).await?;
        let count = TokenCount { window_start, used, read_at: now };
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(scope.to_owned(), count);
        Ok(used)
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

#[cfg(test)]
mod tests {
    use actix_web::ResponseError as _;
    use actix_web::http::StatusCode;
    use registry::Actor;
    use registry::db::Db;
    use registry::names::{Role, TenantSlug};
    use registry::storage::{Storage, StorageConfig};

    use super::*;
    use crate::auth::Credential;

    #[tokio::test]
    async fn generated_tokens_count_against_the_minute_on_every_gateway() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("database");
        db.migrate().await.expect("migrations");
        let storage =
            Storage::open(&StorageConfig { url: "memory:///".into(), ..StorageConfig::default() }).expect("store");
        let registry = Registry::new(db, storage);
        let actor = Actor::system();
        let mut tenant =
            registry.create_tenant(&actor, &TenantSlug::parse("acme").expect("slug")).await.expect("tenant");
        tenant.limits = Limits { tokens_per_minute: Some(100), ..Limits::default() };
        registry.set_quotas(&actor, &tenant, None, tenant.limits).await.expect("limits");
        let principal = Principal {
            key_id: "k1".into(),
            limits: Limits::default(),
            scope: Scope::Tenant { tenant, role: Role::Invoker },
            credential: Credential::ApiKey,
            source_ip: None,
        };
        // Two gateways on one database, inside one calendar minute.
        let into_minute = now_ms().rem_euclid(WINDOW_MS);
        if into_minute > WINDOW_MS - 5_000 {
            tokio::time::sleep(Duration::from_millis((WINDOW_MS - into_minute) as u64 + 100)).await;
        }
        let (a, b) = (Limiter::new(registry.clone()), Limiter::new(registry.clone()));
        assert!(a.admit(&principal).await.is_ok());
        a.record_tokens(&principal, 60).await.expect("counted");
        assert!(b.admit(&principal).await.is_ok(), "60 of 100 tokens used: admitted");
        b.record_tokens(&principal, 50).await.expect("counted");
        let refused = b.admit(&principal).await.err().expect("110 of 100 tokens used: refused");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.to_string().contains("the tenant's tokens_per_minute limit (100)"), "{refused}");
        let response = refused.error_response();
        let retry_after: i64 =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).expect("Retry-After");
        let left = (60_000 - now_ms().rem_euclid(60_000) + 999) / 1000;
        assert!((retry_after - left).abs() <= 1, "Retry-After {retry_after} s is when the minute ends ({left} s)");
        tokio::time::sleep(Duration::from_millis(TOKEN_COUNT_TTL_MS as u64 + 50)).await;
        assert!(a.admit(&principal).await.is_err(), "the other gateway reads the count again and refuses too");
    }
}
