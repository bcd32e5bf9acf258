//! A tenant's API keys: list, create (the secret is shown once), revoke.

use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use registry::keys::{ApiKey, KeyRole};
use registry::limits::Limits;
use registry::names::Role;
use registry::page::PageRequest;
use registry::tenants::Tenant;
use serde::Deserialize;

use super::view::{Chrome, Session, when, when_opt};
use super::{PageError, html, optional_number, see_other};
use crate::AppState;
use crate::error::ApiError;

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    role: &'static str,
    created: String,
    last_used: String,
    expires: String,
    revoked: String,
    active: bool,
}

impl KeyRow {
    fn new(k: ApiKey, now: i64) -> Self {
        KeyRow {
            active: k.is_active(now),
            role: match k.role {
                KeyRole::PlatformAdmin => "platform admin",
                KeyRole::Tenant(role) => role.as_str(),
            },
            created: when(k.created_at),
            last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            expires: k.expires_at.map(when).unwrap_or_else(|| "never".into()),
            revoked: when_opt(k.revoked_at),
            id: k.id,
            name: k.name,
            prefix: k.prefix,
        }
    }
}

/// A key just made: its secret, on this one page only.
struct Created {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    tenant: String,
    keys: Vec<KeyRow>,
    created: Option<Created>,
}

async fn keys_page(
    state: &AppState,
    session: &Session,
    tenant: &Tenant,
    created: Option<Created>,
) -> Result<HttpResponse, PageError> {
    let now = registry::db::now_ms();
    let keys = state.registry.list_keys(&tenant.id, &PageRequest::first(1000)).await?;
    let view = KeysPage {
        chrome: session.chrome("keys"),
        tenant: tenant.name.to_string(),
        keys: keys.data.into_iter().map(|k| KeyRow::new(k, now)).collect(),
        created,
    };
    html(&view)
}

/// The tenant's keys. Requires: tenant admin.
#[get("/admin/tenants/{tenant}/keys")]
async fn page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let tenant = session.principal.tenant(&state.registry, &path, Role::Admin).await?;
    keys_page(&state, &session, &tenant, None).await
}

#[derive(Deserialize)]
struct CreateForm {
    name: String,
    role: Role,
    /// Days until the key stops working; blank: never.
    expires_in_days: String,
}

/// Creates a key and shows its secret, once. Requires: tenant admin.
#[post("/admin/tenants/{tenant}/keys")]
async fn create(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    let tenant = session.principal.tenant(&state.registry, &path, Role::Admin).await?;
    let expires_at = match optional_number("expires in (days)", &form.expires_in_days)? {
        Some(days) if days < 1 => {
            return Err(ApiError::invalid("a key expires in at least 1 day, or never").into());
        }
        Some(days) => Some(registry::db::now_ms().saturating_add(days.saturating_mul(86_400_000))),
        None => None,
    };
    let (key, secret) = state
        .registry
        .create_key(
            &session.principal.actor(),
            Some(&tenant.id),
            form.name.trim(),
            KeyRole::Tenant(form.role),
            expires_at,
            Limits::default(),
        )
        .await?;
    keys_page(&state, &session, &tenant, Some(Created { name: key.name, secret })).await
}

/// Revokes a key: it, its tokens and its sessions stop working. Requires: tenant admin.
#[post("/admin/tenants/{tenant}/keys/{id}/revoke")]
async fn revoke(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, id) = path.into_inner();
    let tenant = session.principal.tenant(&state.registry, &tenant, Role::Admin).await?;
    state.registry.revoke_key(&session.principal.actor(), &tenant.id, &id).await?;
    state.auth.invalidate();
    Ok(see_other(&format!("/admin/tenants/{}/keys", tenant.name)))
}
