//! Signing in and out, and the gate every dashboard request passes.
//!
//! Signing in exchanges an API key for a session cookie holding a short-lived token of this
//! gateway (HttpOnly, SameSite=Strict, Secure behind TLS, path `/admin`). The token carries a
//! random session id, `sid`, which is also the session's CSRF token: every form posts it back
//! and the gate compares the two. The token is renewed while the session is in use; the key
//! it names is checked on every request, so revoking the key or suspending its tenant ends
//! the session at once (within the key cache's lifetime on other gateways). Signing out
//! revokes the session's `sid` in the database: a copy of the cookie kept elsewhere is dead
//! too. A session token is not an API credential: the API's bearer auth refuses it.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use serde::Deserialize;

use super::view::{Session, url_encode};
use super::{PAGES, PageError, error_page, html, html_with, see_other};
use crate::AppState;
use crate::auth::{Credential, authenticate_credential, authenticate_token_claims};
use crate::error::ApiError;
use crate::routes::table::{self, Need};

pub const COOKIE: &str = "mg_session";
const CSRF_HEADER: &str = "x-csrf-token";

/// Whether a path belongs to the dashboard.
pub(crate) fn is_page(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// The gate of every dashboard request: the page must be in [`PAGES`]; its need is checked
/// against the session's principal with the API's own `table::check`; a post must come from
/// this origin and carry the session's CSRF token. Answers the page to show instead when the
/// request may not go on, else a renewed session cookie when the token is past half its life.
pub(crate) async fn admit(req: &mut ServiceRequest) -> Result<Option<Cookie<'static>>, HttpResponse> {
    let (rule, captures) = table::rule_in(PAGES, req.method(), req.path())
        .ok_or_else(|| error_page(&ApiError::not_found("there is no such page")))?;
    let posting = req.method() == Method::POST;
    if posting {
        same_origin(req.request()).map_err(|e| error_page(&e))?;
    }
    if rule.need == Need::Public {
        return Ok(None);
    }
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| error_page(&ApiError::internal(std::io::Error::other("no application state (a bug)"))))?;
    let claims = req
        .cookie(COOKIE)
        .and_then(|c| state.auth.tokens.verify(c.value()).ok())
        .filter(|claims| claims.sid.is_some())
        .ok_or_else(|| to_login(req.request(), None))?;
    let sid = claims.sid.clone().unwrap_or_default();
    // Signed out: the session is over, whatever copy of its cookie comes back.
    if state.registry.session_revoked(&sid).await.map_err(|e| error_page(&ApiError::from(e)))? {
        return Err(to_login(req.request(), Some("out")));
    }
    let source_ip = req.connection_info().peer_addr().map(str::to_owned);
    let principal = authenticate_token_claims(&state, &claims, source_ip).await.map_err(|e| {
        if e.status() == StatusCode::UNAUTHORIZED { to_login(req.request(), Some("ended")) } else { error_page(&e) }
    })?;
    table::check(rule, &principal, &captures).map_err(|e| error_page(&e))?;
    if posting {
        check_csrf(req, &sid).await.map_err(|e| error_page(&e))?;
    }
    let now = registry::db::now_ms() / 1000;
    let renewed = if claims.exp - now < state.auth.tokens.ttl_secs() / 2 {
        let (token, _) = state.auth.tokens.issue_with_session(&claims.sub, Some(&sid)).map_err(|e| error_page(&e))?;
        Some(session_cookie(req.request(), token, state.auth.tokens.ttl_secs()))
    } else {
        None
    };
    req.extensions_mut().insert(principal.clone());
    req.extensions_mut().insert(Session { principal, csrf: sid });
    Ok(renewed)
}

/// A post whose `Origin` names another site is refused (a second lock beside the token).
fn same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return Ok(()) };
    let info = req.connection_info();
    let ours = format!("{}://{}", info.scheme(), info.host());
    if origin.as_bytes() == ours.as_bytes() {
        Ok(())
    } else {
        Err(ApiError::forbidden("this form was posted from another site; it is refused"))
    }
}

#[derive(Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

/// The session's CSRF token must come back: in the `X-CSRF-Token` header (the page's
/// script), the `csrf` field of a url-encoded form, or, for a file upload (multipart, whose
/// body the handler streams), the `csrf` query parameter of the form's action.
async fn check_csrf(req: &mut ServiceRequest, sid: &str) -> Result<(), ApiError> {
    let from_query = || web::Query::<CsrfField>::from_query(req.query_string()).ok().and_then(|q| q.0.csrf);
    let presented = if let Some(value) = req.headers().get(CSRF_HEADER) {
        value.to_str().ok().map(str::to_owned)
    } else if req.content_type() == "application/x-www-form-urlencoded" {
        let body = req
            .extract::<web::Bytes>()
            .await
            .map_err(|_| ApiError::invalid("the form could not be read; send it again from its page"))?;
        let token = std::str::from_utf8(&body)
            .ok()
            .and_then(|form| web::Query::<CsrfField>::from_query(form).ok())
            .and_then(|f| f.0.csrf);
        req.set_payload(Payload::from(body));
        token
    } else if req.content_type() == "multipart/form-data" {
        from_query()
    } else {
        None
    };
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), sid.as_bytes()) => Ok(()),
        _ => Err(ApiError::forbidden(
            "this form lacks this session's security token (CSRF); reload its page and send it again",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// To the sign-in page, coming back here afterwards (for a page; a form goes to the overview).
fn to_login(req: &HttpRequest, reason: Option<&str>) -> HttpResponse {
    let next = if req.method() == Method::GET { req.uri().path_and_query().map(|p| p.as_str()) } else { None };
    let mut query = Vec::new();
    if let Some(next) = next {
        query.push(format!("next={}", url_encode(next)));
    }
    if let Some(reason) = reason {
        query.push(format!("session={reason}"));
    }
    let encoded = query.join("&");
    let location = if encoded.is_empty() { "/admin/login".to_owned() } else { format!("/admin/login?{encoded}") };
    let mut response = see_other(&location);
    if reason.is_some() {
        let _ = response.add_removal_cookie(&session_cookie(req, String::new(), 0));
    }
    response
}

pub(crate) fn session_cookie(req: &HttpRequest, token: String, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(COOKIE, token)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(req.connection_info().scheme() == "https")
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

/// Where to go after signing in: a dashboard page of this site, nothing else.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if is_page(n.split('?').next().unwrap_or_default()) && !n.contains("//") && !n.contains('\\') => n,
        _ => "/admin",
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    error: Option<String>,
    notice: Option<&'static str>,
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    session: Option<String>,
}

/// The sign-in form. Requires: nothing.
#[get("/admin/login")]
async fn login_form(query: web::Query<LoginQuery>) -> Result<HttpResponse, PageError> {
    let notice = match query.session.as_deref() {
        Some("ended") => Some("Your session has ended: its key was revoked or expired, or its tenant suspended."),
        Some("out") => Some("You have signed out."),
        _ => None,
    };
    let view = LoginPage { next: safe_next(query.next.as_deref()), error: None, notice };
    html(&view)
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
}

/// Exchanges an API key for a session. Requires: an API key (in the form).
#[post("/admin/login")]
async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    let next = safe_next(form.next.as_deref());
    let key = form.key.trim();
    let refused =
        |message: String| html_with(StatusCode::UNAUTHORIZED, &LoginPage { next, error: Some(message), notice: None });
    if !key.starts_with(registry::keys::KEY_PREFIX) {
        return refused("Paste an API key: it starts with mg_.".into());
    }
    let source_ip = req.connection_info().peer_addr().map(str::to_owned);
    let principal = match authenticate_credential(&state, key, source_ip).await {
        Ok(p) if p.credential == Credential::ApiKey => p,
        Ok(_) => return refused("Paste an API key, not a token.".into()),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => return refused(e.message().to_owned()),
        Err(e) => return Err(e.into()),
    };
    let sid = hex::encode(rand::random::<[u8; 32]>());
    let (token, _) = state.auth.tokens.issue_with_session(&principal.key_id, Some(&sid))?;
    tracing::info!(key.id = %principal.key_id, "dashboard sign-in");
    let mut response = see_other(next);
    response.add_cookie(&session_cookie(&req, token, state.auth.tokens.ttl_secs())).map_err(ApiError::internal)?;
    Ok(response)
}

/// Ends the session: its `sid` is revoked (on every gateway, for every copy of its cookie)
/// and the cookie removed from this browser. Requires: a session.
#[post("/admin/logout")]
async fn logout(state: web::Data<AppState>, req: HttpRequest, session: Session) -> Result<HttpResponse, PageError> {
    // Every token of the session expires within a lifetime (and the verifier's leeway) from now.
    let last_expiry =
        registry::db::now_ms() + (state.auth.tokens.ttl_secs() + crate::tokens::LEEWAY_SECS as i64) * 1000;
    state.registry.revoke_session(&session.csrf, last_expiry).await.map_err(ApiError::from)?;
    tracing::info!(key.id = %session.principal.key_id, "dashboard sign-out");
    let mut response = see_other("/admin/login?session=out");
    response.add_removal_cookie(&session_cookie(&req, String::new(), 0)).map_err(ApiError::internal)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_dashboard_is_a_place_to_return_to() {
        assert_eq!(safe_next(Some("/admin/tenants/acme?x=1")), "/admin/tenants/acme?x=1");
        assert_eq!(safe_next(Some("https://evil.example/admin")), "/admin");
        assert_eq!(safe_next(Some("//evil.example/admin")), "/admin");
        assert_eq!(safe_next(Some("/admin/..//evil")), "/admin");
        assert_eq!(safe_next(Some("/api/v1/tenants")), "/admin");
        assert_eq!(safe_next(None), "/admin");
    }

    #[test]
    fn tokens_compare_in_full() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
