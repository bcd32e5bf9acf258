use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::AppState;
use crate::auth::{Credential, Principal, Scope};
use crate::error::ApiError;

/// Exchanges an API key for a short-lived JWT. Requires: an API key (a token cannot mint tokens).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth", responses((status = 200, body = crate::routes::schemas::Token)))]
pub(super) async fn issue(state: web::Data<AppState>, principal: Principal) -> Result<HttpResponse, ApiError> {
    if principal.credential != Credential::ApiKey {
        return Err(ApiError::forbidden("tokens are issued for API keys; send the key, not a token"));
    }
    let (token, expires_at) = state.auth.tokens.issue(&principal.key_id)?;
    Ok(HttpResponse::Ok().json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_at": expires_at,
        "expires_in": expires_at - registry::db::now_ms() / 1000,
    })))
}

/// Who the credential is: its key (or external principal), tenant, role and limits. Answers
/// from the auth cache, so it is also the cheapest authenticated request there is (the auth
/// benchmark calls it). Requires: any credential.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth", responses((status = 200, body = crate::routes::schemas::WhoAmI)))]
pub(super) async fn whoami(principal: Principal) -> HttpResponse {
    let (tenant, role) = match &principal.scope {
        Scope::PlatformAdmin => (None, "platform_admin"),
        Scope::Tenant { tenant, role } => (Some(tenant.name.as_str()), role.as_str()),
    };
    HttpResponse::Ok().json(json!({
        "key_id": principal.key_id,
        "tenant": tenant,
        "role": role,
        "credential": match principal.credential { Credential::ApiKey => "api_key", Credential::Token => "token" },
        "limits": principal.limits,
    }))
}

/// The public keys that verify this gateway's tokens (current and previous), as a JSON Web Key
/// Set. Requires: nothing.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses((status = 200, body = crate::routes::schemas::Jwks)))]
pub(super) async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=300")).json(state.auth.tokens.jwks())
}
