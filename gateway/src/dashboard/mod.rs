//! The admin dashboard: pages under `/admin`, rendered on the server from the templates in
//! `web/templates` (askama, checked when the gateway compiles), with the stylesheet and the
//! one small script of `web/static` compiled into the binary. Nothing is fetched from
//! elsewhere. Every page and form works without JavaScript; the script only adds live
//! refresh, upload progress and copy buttons.
//!
//! Pages make the registry and runner-pool calls the API's handlers make, under the same
//! authorization: [`PAGES`] states each page's need in the API table's terms, and the gate
//! (`session.rs`) checks it with `table::check` against the principal of the session cookie,
//! exactly as the API's gate does for a bearer credential. Handlers narrow further with
//! `Principal::tenant`, like the API's.

mod actors;
mod assets;
mod audit;
mod charts;
mod keys;
mod models;
mod overview;
mod runners;
mod session;
mod tenants;
mod usage;
mod versions;
mod view;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;

pub use session::COOKIE;
pub(crate) use session::{admit, is_page};

use crate::error::ApiError;
use crate::routes::table::{Need, Rule, rule};

use Need::{AnyAdmin, Authenticated, PlatformAdmin, Public, Tenant};
use registry::names::Role::{Admin, Developer, Viewer};

macro_rules! tenant_page {
    ($tail:literal) => {
        concat!("/admin/tenants/{tenant}", $tail)
    };
}

/// Every dashboard page and form, with what it requires (the API's terms).
pub const PAGES: &[Rule] = &[
    rule("GET", "/admin/login", Public),
    rule("POST", "/admin/login", Public),
    rule("GET", "/admin/static/{file}", Public),
    rule("POST", "/admin/logout", Authenticated),
    rule("GET", "/admin", Authenticated),
    rule("GET", "/admin/tenants", PlatformAdmin),
    rule("POST", "/admin/tenants", PlatformAdmin),
    rule("GET", "/admin/runners", PlatformAdmin),
    rule("POST", "/admin/runners/load", PlatformAdmin),
    rule("POST", "/admin/runners/unload", PlatformAdmin),
    rule("POST", "/admin/runners/pin", PlatformAdmin),
    rule("GET", "/admin/audit", AnyAdmin),
    rule("GET", tenant_page!(""), Tenant(Viewer)),
    rule("POST", tenant_page!("/quotas"), PlatformAdmin),
    rule("POST", tenant_page!("/suspend"), PlatformAdmin),
    rule("POST", tenant_page!("/resume"), PlatformAdmin),
    rule("GET", tenant_page!("/keys"), Tenant(Admin)),
    rule("POST", tenant_page!("/keys"), Tenant(Admin)),
    rule("POST", tenant_page!("/keys/{id}/revoke"), Tenant(Admin)),
    rule("GET", tenant_page!("/usage"), Tenant(Admin)),
    rule("GET", tenant_page!("/models"), Tenant(Viewer)),
    rule("POST", tenant_page!("/models"), Tenant(Developer)),
    rule("GET", tenant_page!("/models/{model}"), Tenant(Viewer)),
    rule("GET", tenant_page!("/models/{model}/aliases/move"), Tenant(Developer)),
    rule("POST", tenant_page!("/models/{model}/aliases"), Tenant(Developer)),
    rule("POST", tenant_page!("/models/{model}/versions"), Tenant(Developer)),
    rule("GET", tenant_page!("/models/{model}/versions/{version}"), Tenant(Viewer)),
    rule("POST", tenant_page!("/models/{model}/versions/{version}/files"), Tenant(Developer)),
    rule("POST", tenant_page!("/models/{model}/versions/{version}/commit"), Tenant(Developer)),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(session::login_form)
        .service(session::login)
        .service(session::logout)
        .service(assets::file)
        .service(overview::page)
        .service(tenants::list)
        .service(tenants::create)
        .service(tenants::page)
        .service(tenants::quotas)
        .service(tenants::suspend)
        .service(tenants::resume)
        .service(keys::page)
        .service(keys::create)
        .service(keys::revoke)
        .service(usage::page)
        .service(models::list)
        .service(models::create)
        .service(models::page)
        .service(models::confirm_alias)
        .service(models::set_alias)
        .service(versions::upload)
        .service(versions::page)
        .service(versions::add_files)
        .service(versions::commit)
        .service(runners::page)
        .service(runners::load)
        .service(runners::unload)
        .service(runners::pin)
        .service(audit::page);
}

/// A failure shown as a page: the same errors as the API's, in HTML.
#[derive(Debug)]
pub(crate) struct PageError(ApiError);

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status()
    }

    fn error_response(&self) -> HttpResponse {
        error_page(&self.0)
    }
}

/// The HTML page of an error, with the status the API would answer.
pub(crate) fn error_page(e: &ApiError) -> HttpResponse {
    e.log_if_ours();
    let status = e.status();
    let title = status.canonical_reason().unwrap_or("Error");
    let view = ErrorPage { status: status.as_u16(), title, message: e.message() };
    let body = view.render().unwrap_or_else(|_| format!("{} {title}: {}", status.as_u16(), e.message()));
    secured(HttpResponse::build(status)).content_type("text/html; charset=utf-8").body(body)
}

/// Headers every dashboard answer carries: no framing, no inline script or style, nothing
/// from other origins, no caching of pages that show tenants' data.
fn secured(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("referrer-policy", "same-origin"))
        .insert_header(("cache-control", "no-store"));
    builder
}

/// A rendered page.
fn html(page: &impl Template) -> Result<HttpResponse, PageError> {
    html_with(StatusCode::OK, page)
}

fn html_with(status: StatusCode, page: &impl Template) -> Result<HttpResponse, PageError> {
    let body = page.render().map_err(ApiError::internal)?;
    Ok(secured(HttpResponse::build(status)).content_type("text/html; charset=utf-8").body(body))
}

/// After a form: go to `location` (303, so a reload does not post again).
fn see_other(location: &str) -> HttpResponse {
    secured(HttpResponse::SeeOther()).insert_header(("location", location)).finish()
}

/// A number from an optional form field: blank is None.
fn optional_number(field: &str, raw: &str) -> Result<Option<i64>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>().map(Some).map_err(|_| ApiError::invalid(format!("{field} must be a whole number or blank")))
}
