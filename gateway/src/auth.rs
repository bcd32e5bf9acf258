//! Who is calling (authentication) and what they may do (authorization).
//! Every handler takes a [`Principal`] and states what it requires at the call site.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use registry::keys::{ApiKey, KEY_PREFIX, KeyRole};
use registry::names::{Role, TenantSlug};
use registry::tenants::Tenant;
use registry::{Actor, Registry};

use crate::AppState;
use crate::error::ApiError;

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
    pub key_id: String,
    pub scope: Scope,
    pub credential: Credential,
    source_ip: Option<String>,
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

fn require_role(have: Role, need: Role) -> Result<(), ApiError> {
    if have >= need {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "this needs the {} role or above; the key has {}",
            need.as_str(),
            have.as_str()
        )))
    }
}

/// Resolves the `Authorization: Bearer` credential (an API key or a token) to a principal.
/// Keys and tokens are checked against the database on every request, so a revoked key
/// and every token issued for it stop working at once.
pub async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header; send 'Authorization: Bearer <API key or token>'")
    })?;
    let bearer = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <API key or token>'"))?;
    let (key, credential) = if bearer.starts_with(KEY_PREFIX) {
        let key = state
            .registry
            .authenticate_key(bearer)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked API key"))?;
        (key, Credential::ApiKey)
    } else {
        let claims = state.tokens.verify(bearer)?;
        let key = state
            .registry
            .key_by_id(&claims.sub)
            .await?
            .filter(|k| k.is_active(registry::db::now_ms()))
            .ok_or_else(|| ApiError::unauthorized("the key this token was issued for is revoked or expired"))?;
        (key, Credential::Token)
    };
    let scope = scope_of(&state.registry, &key).await?;
    let source_ip = req.connection_info().peer_addr().map(str::to_owned);
    Ok(Principal { key_id: key.id, scope, credential, source_ip })
}

async fn scope_of(registry: &Registry, key: &ApiKey) -> Result<Scope, ApiError> {
    match (key.role, &key.tenant_id) {
        (KeyRole::PlatformAdmin, _) => Ok(Scope::PlatformAdmin),
        (KeyRole::Tenant(role), Some(tenant_id)) => {
            Ok(Scope::Tenant { tenant: registry.tenant_by_id(tenant_id).await?, role })
        }
        (KeyRole::Tenant(_), None) => Err(ApiError::unauthorized("this key belongs to no tenant")),
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req.app_data::<web::Data<AppState>>().cloned().ok_or_else(|| {
                ApiError::internal(std::io::Error::other("application state is not registered (a bug)"))
            })?;
            authenticate(&state, &req).await
        })
    }
}
