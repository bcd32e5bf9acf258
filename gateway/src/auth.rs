//! Who is calling (authentication) and what they may do (authorization).
//! Every handler takes a [`Principal`] and states what it requires at the call site.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use moka::future::Cache;
use registry::db::now_ms;
use registry::keys::{ApiKey, KEY_PREFIX, KeyRole, LAST_USED_GRANULARITY_MS, key_id, secret_matches};
use registry::limits::Limits;
use registry::names::{Role, TenantSlug};
use registry::tenants::Tenant;
use registry::{Actor, Registry};

use crate::AppState;
use crate::error::ApiError;
use crate::oidc::Oidc;
use crate::tokens::{self, TokenIssuer};

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    Token,
}

#[derive(Debug, Clone)]
pub enum Scope {
    /// Manages tenants; may act in every tenant.
    PlatformAdmin,
    /// Acts in one tenant with one role.
    Tenant { tenant: Tenant, role: Role },
}

#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key that authenticated, itself or through a token this gateway issued for it;
    /// `oidc:<issuer>:<subject>` for an external token. What [`Principal::actor`] records.
    pub key_id: String,
    /// The key's own request limits (none for platform admins and external tokens).
    pub limits: Limits,
    pub scope: Scope,
    pub credential: Credential,
    pub(crate) source_ip: Option<String>,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor { key_id: self.key_id.clone(), source_ip: self.source_ip.clone() }
    }

    pub fn require_platform_admin(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::PlatformAdmin => Ok(()),
            Scope::Tenant { .. } => Err(ApiError::forbidden("this needs a platform admin key")),
        }
    }

    /// The tenant named in a path, if this principal may act in it with at least `need`.
    /// Another tenant's name answers 404 exactly like a name that does not exist.
    pub async fn tenant(&self, registry: &Registry, name: &str, need: Role) -> Result<Tenant, ApiError> {
        let not_found = || ApiError::not_found(format!("tenant {name:?} not found"));
        let slug = TenantSlug::parse(name).map_err(|_| not_found())?;
        match &self.scope {
            Scope::PlatformAdmin => registry.tenant_by_slug(&slug).await.map_err(|e| match e {
                registry::Error::NotFound { .. } => not_found(),
                e => e.into(),
            }),
            Scope::Tenant { tenant, role } => {
                if tenant.name != slug {
                    return Err(not_found());
                }
                require_role(*role, need)?;
                Ok(tenant.clone())
            }
        }
    }

    /// The caller's own tenant, for the inference API (which names no tenant).
    pub fn own_tenant(&self, need: Role) -> Result<&Tenant, ApiError> {
        match &self.scope {
            Scope::PlatformAdmin => {
                Err(ApiError::forbidden("platform admin keys belong to no tenant; call inference with a tenant key"))
            }
            Scope::Tenant { tenant, role } => {
                require_role(*role, need)?;
                Ok(tenant)
            }
        }
    }
}

pub(crate) fn require_role(have: Role, need: Role) -> Result<(), ApiError> {
    if have >= need {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this needs the {} role or above; the credential has {}",
            need.as_str(),
            have.as_str()
        )))
    }
}

/// Resolves credentials to principals. Keys (with their tenant) are cached for `ttl`: a
/// cached request touches no database, and a revocation or suspension made on another gateway
/// takes effect within `ttl` (on this one, at once: it invalidates its cache).
pub struct Authenticator {
    pub tokens: TokenIssuer,
    oidc: Oidc,
    /// Key id -> the key, its secret's hash and its tenant; None for an unknown id.
    keys: Cache<String, Option<Arc<CachedKey>>>,
    /// Tenant slug -> tenant, for external tokens that name their tenant.
    tenants: Cache<String, Option<Arc<Tenant>>>,
}

struct CachedKey {
    key: ApiKey,
    secret_sha256: String,
    tenant: Option<Tenant>,
    /// When `last_used_at` was last written (ms), so the write happens once a minute at most.
    last_used_noted: AtomicI64,
}

impl Authenticator {
    pub fn new(tokens: TokenIssuer, oidc: Oidc, ttl: Duration) -> Self {
        let keys = Cache::builder().max_capacity(100_000).time_to_live(ttl).build();
        let tenants = Cache::builder().max_capacity(10_000).time_to_live(ttl).build();
        Self { tokens, oidc, keys, tenants }
    }

    /// Forgets every cached key and tenant (after a revocation or a suspension here).
    pub fn invalidate(&self) {
        self.keys.invalidate_all();
        self.tenants.invalidate_all();
    }

    async fn key(&self, registry: &Registry, id: &str) -> Result<Option<Arc<CachedKey>>, ApiError> {
        let load = async {
            let Some((key, secret_sha256)) = registry.key_with_secret_hash(id).await? else {
                return Ok(None);
            };
            let tenant = match &key.tenant_id {
                Some(tenant_id) => Some(registry.tenant_by_id(tenant_id).await?),
                None => None,
            };
            let noted = key.last_used_at.unwrap_or(0);
            Ok::<_, registry::Error>(Some(Arc::new(CachedKey {
                key,
                secret_sha256,
                tenant,
                last_used_noted: AtomicI64::new(noted),
            })))
        };
        self.keys.try_get_with(id.to_owned(), load).await.map_err(ApiError::from)
    }

    async fn tenant(&self, registry: &Registry, slug: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        let Ok(slug) = TenantSlug::parse(slug) else { return Ok(None) };
        let load = async {
            match registry.tenant_by_slug(&slug).await {
                Ok(tenant) => Ok(Some(Arc::new(tenant))),
                Err(registry::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        self.tenants.try_get_with(slug.to_string(), load).await.map_err(ApiError::from)
    }
}

fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send 'Authorization: Bearer <API key or token>'")
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <API key or token>'"))
}

fn suspended(tenant: &Tenant) -> ApiError {
    ApiError::unauthorized(format!("tenant {:?} is suspended; its keys and tokens are refused", tenant.name.as_str()))
}

/// Resolves the `Authorization: Bearer` credential (an API key, a token of this gateway, or a
/// token of a configured OIDC issuer) to a principal.
pub async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let source_ip = req.connection_info().peer_addr().map(str::to_owned);
    authenticate_credential(state, bearer(req)?, source_ip).await
}

/// Resolves an API key or a token to a principal, with every check a request gets.
pub async fn authenticate_credential(
    state: &AppState,
    bearer: &str,
    source_ip: Option<String>,
) -> Result<Principal, ApiError> {
    let auth = &state.auth;
    if bearer.starts_with(KEY_PREFIX) {
        let invalid = || ApiError::unauthorized("invalid, expired or revoked API key");
        let id = key_id(bearer).ok_or_else(invalid)?;
        let cached = auth.key(&state.registry, id).await?.ok_or_else(invalid)?;
        if !secret_matches(bearer, &cached.secret_sha256) {
            return Err(invalid());
        }
        return principal_of(state, &cached, Credential::ApiKey, source_ip);
    }
    let header = tokens::header_of(bearer)?;
    if !auth.tokens.knows(&header) {
        let external = auth.oidc.verify(bearer, &header).await?;
        let scope = match external.role {
            KeyRole::PlatformAdmin => Scope::PlatformAdmin,
            KeyRole::Tenant(role) => {
                let tenant = auth.tenant(&state.registry, &external.tenant).await?.ok_or_else(|| {
                    tokens::invalid_token(format!("the token's tenant {:?} does not exist", external.tenant))
                })?;
                if tenant.suspended_at.is_some() {
                    return Err(suspended(&tenant));
                }
                Scope::Tenant { tenant: (*tenant).clone(), role }
            }
        };
        let limits = Limits::default();
        return Ok(Principal { key_id: external.actor, limits, scope, credential: Credential::Token, source_ip });
    }
    let claims = auth.tokens.verify(bearer)?;
    if claims.sid.is_some() {
        // A session token lives in an HttpOnly cookie scoped to /admin; one found elsewhere
        // was lifted from there, and would outlive its sign-out as a bearer token.
        return Err(tokens::invalid_token(
            "this is a dashboard session token, valid only as the /admin session cookie; call the API with an \
             API key or a token from POST /api/v1/auth/token",
        ));
    }
    authenticate_token_claims(state, &claims, source_ip).await
}

/// The principal of a token this gateway issued and verified (an API call's or a dashboard
/// session's): the key it names must still be active and its tenant not suspended.
pub async fn authenticate_token_claims(
    state: &AppState,
    claims: &tokens::Claims,
    source_ip: Option<String>,
) -> Result<Principal, ApiError> {
    let cached = state
        .auth
        .key(&state.registry, &claims.sub)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the key this token was issued for does not exist"))?;
    principal_of(state, &cached, Credential::Token, source_ip)
}

fn principal_of(
    state: &AppState,
    cached: &CachedKey,
    credential: Credential,
    source_ip: Option<String>,
) -> Result<Principal, ApiError> {
    let now = now_ms();
    let key = &cached.key;
    if !key.is_active(now) {
        return Err(ApiError::unauthorized(match credential {
            Credential::ApiKey => "invalid, expired or revoked API key",
            Credential::Token => "the key this token was issued for is revoked or expired",
        }));
    }
    let scope = match (key.role, &cached.tenant) {
        (KeyRole::PlatformAdmin, _) => Scope::PlatformAdmin,
        (KeyRole::Tenant(role), Some(tenant)) => {
            if tenant.suspended_at.is_some() {
                return Err(suspended(tenant));
            }
            Scope::Tenant { tenant: tenant.clone(), role }
        }
        (KeyRole::Tenant(_), None) => return Err(ApiError::unauthorized("this key belongs to no tenant")),
    };
    let noted = cached.last_used_noted.load(Ordering::Relaxed);
    if now - noted > LAST_USED_GRANULARITY_MS
        && cached.last_used_noted.compare_exchange(noted, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        // Off the request path: the answer does not wait for this write.
        let (registry, id) = (state.registry.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = registry.note_key_used(&id, now).await {
                tracing::warn!(error = %e, "recording a key's last use failed");
            }
        });
    }
    Ok(Principal { key_id: key.id.clone(), limits: key.limits, scope, credential, source_ip })
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        if let Some(principal) = req.extensions().get::<Principal>() {
            // Authenticated already by the route table's check (lib.rs `authorize`).
            let principal = principal.clone();
            return Box::pin(async move { Ok(principal) });
        }
        let req = req.clone();
        Box::pin(async move {
            let state = req.app_data::<web::Data<AppState>>().cloned().ok_or_else(|| {
                ApiError::internal(std::io::Error::other("application state is not registered (a bug)"))
            })?;
            authenticate(&state, &req).await
        })
    }
}
