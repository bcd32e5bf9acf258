//! The route table: every route and what it requires. The gateway enforces it before any
//! handler runs (a route missing from it is refused), docs/API.md prints it (a test keeps the
//! two equal), and the end-to-end matrix test calls every route with every role, in the
//! caller's own tenant and in another. Handlers still state and check their own needs; this
//! table is the second, central lock.

use actix_web::http::Method;
use registry::names::Role;

use crate::auth::{Credential, Principal, Scope, require_role};
use crate::error::ApiError;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, readiness, the JWKS.
    Public,
    /// Any valid credential.
    Authenticated,
    /// An API key (a token cannot mint tokens).
    ApiKey,
    PlatformAdmin,
    /// At least this role in the tenant the path names (a platform admin acts in every tenant).
    Tenant(Role),
    /// At least this role; the tenant is the credential's own (inference names no tenant).
    OwnTenant(Role),
    /// A platform admin (every tenant), or a tenant admin (their own tenant; the handler
    /// narrows what is shown).
    AnyAdmin,
}

impl Need {
    pub fn describe(self) -> String {
        match self {
            Need::Public => "nothing".into(),
            Need::Authenticated => "any credential".into(),
            Need::ApiKey => "an API key (not a token)".into(),
            Need::PlatformAdmin => "platform admin".into(),
            Need::Tenant(role) => format!("{} of the tenant", role.as_str()),
            Need::OwnTenant(role) => format!("{} (own tenant)", role.as_str()),
            Need::AnyAdmin => "platform admin (all tenants), or admin (own tenant)".into(),
        }
    }
}

pub struct Rule {
    pub method: &'static str,
    /// actix-web's pattern: `{name}` is one segment, `{name:.*}` the rest of the path.
    pub path: &'static str,
    pub need: Need,
}

pub(crate) const fn rule(method: &'static str, path: &'static str, need: Need) -> Rule {
    Rule { method, path, need }
}

use Need::{ApiKey, OwnTenant, PlatformAdmin, Public, Tenant};
use Role::{Admin, Developer, Invoker, Viewer};

macro_rules! model {
    ($tail:literal) => {
        concat!("/api/v1/tenants/{tenant}/models/{model}", $tail)
    };
}

macro_rules! version {
    ($tail:literal) => {
        concat!("/api/v1/tenants/{tenant}/models/{model}/versions/{version}", $tail)
    };
}

/// Every route the gateway serves.
pub const ROUTES: &[Rule] = &[
    rule("GET", "/healthz", Public),
    rule("GET", "/readyz", Public),
    rule("GET", "/.well-known/jwks.json", Public),
    rule("GET", "/api/v1/openapi.json", Public),
    rule("POST", "/api/v1/auth/token", ApiKey),
    rule("GET", "/api/v1/auth/whoami", Need::Authenticated),
    rule("POST", "/api/v1/tenants", PlatformAdmin),
    rule("GET", "/api/v1/tenants", PlatformAdmin),
    rule("POST", "/api/v1/admin/gc", PlatformAdmin),
    rule("GET", "/api/v1/admin/runners", PlatformAdmin),
    rule("DELETE", "/api/v1/admin/quarantine/{version_id}", PlatformAdmin),
    rule("POST", "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/load", PlatformAdmin),
    rule("POST", "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/unload", PlatformAdmin),
    rule("POST", "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/pin", PlatformAdmin),
    rule("PUT", "/api/v1/tenants/{tenant}/quotas", PlatformAdmin),
    rule("POST", "/api/v1/tenants/{tenant}/suspend", PlatformAdmin),
    rule("POST", "/api/v1/tenants/{tenant}/resume", PlatformAdmin),
    rule("GET", "/api/v1/tenants/{tenant}/quotas", Tenant(Admin)),
    rule("GET", "/api/v1/tenants/{tenant}/audit", Tenant(Admin)),
    rule("GET", "/api/v1/audit", Need::AnyAdmin),
    rule("GET", "/api/v1/tenants/{tenant}/usage", Tenant(Admin)),
    rule("POST", "/api/v1/tenants/{tenant}/keys", Tenant(Admin)),
    rule("GET", "/api/v1/tenants/{tenant}/keys", Tenant(Admin)),
    rule("PATCH", "/api/v1/tenants/{tenant}/keys/{id}", Tenant(Admin)),
    rule("DELETE", "/api/v1/tenants/{tenant}/keys/{id}", Tenant(Admin)),
    rule("POST", "/api/v1/tenants/{tenant}/models", Tenant(Developer)),
    rule("GET", "/api/v1/tenants/{tenant}/models", Tenant(Viewer)),
    rule("GET", model!(""), Tenant(Viewer)),
    rule("PATCH", model!(""), Tenant(Developer)),
    rule("DELETE", model!(""), Tenant(Developer)),
    rule("GET", model!("/aliases"), Tenant(Viewer)),
    rule("PUT", model!("/aliases/{alias}"), Tenant(Developer)),
    rule("DELETE", model!("/aliases/{alias}"), Tenant(Developer)),
    rule("GET", model!("/aliases/{alias}/history"), Tenant(Viewer)),
    rule("POST", model!("/versions"), Tenant(Developer)),
    rule("GET", model!("/versions"), Tenant(Viewer)),
    rule("GET", version!(""), Tenant(Viewer)),
    rule("POST", version!("/commit"), Tenant(Developer)),
    rule("POST", version!("/archive"), Tenant(Developer)),
    rule("PUT", version!("/files/{path:.*}"), Tenant(Developer)),
    rule("GET", version!("/files/{path:.*}"), Tenant(Viewer)),
    rule("HEAD", version!("/files/{path:.*}"), Tenant(Viewer)),
    rule("POST", version!("/uploads"), Tenant(Developer)),
    rule("GET", version!("/uploads"), Tenant(Developer)),
    rule("GET", version!("/uploads/{id}"), Tenant(Developer)),
    rule("DELETE", version!("/uploads/{id}"), Tenant(Developer)),
    rule("PUT", version!("/uploads/{id}/chunks/{index}"), Tenant(Developer)),
    rule("POST", version!("/uploads/{id}/complete"), Tenant(Developer)),
    rule("GET", "/hf/{tenant}/{model}/resolve/{revision}/{path:.*}", Tenant(Viewer)),
    rule("HEAD", "/hf/{tenant}/{model}/resolve/{revision}/{path:.*}", Tenant(Viewer)),
    rule("GET", "/hf/api/models/{tenant}/{model}", Tenant(Viewer)),
    rule("GET", "/hf/api/models/{tenant}/{model}/revision/{revision}", Tenant(Viewer)),
    rule("GET", "/hf/api/models/{tenant}/{model}/tree/{revision}{folder:(/.*)?}", Tenant(Viewer)),
    rule("GET", "/v2/health/live", Public),
    rule("GET", "/v2/health/ready", Public),
    rule("GET", "/v2", Public),
    rule("GET", "/v2/models/{model}", OwnTenant(Invoker)),
    rule("GET", "/v2/models/{model}/versions/{version}", OwnTenant(Invoker)),
    rule("GET", "/v2/models/{model}/ready", OwnTenant(Invoker)),
    rule("GET", "/v2/models/{model}/versions/{version}/ready", OwnTenant(Invoker)),
    rule("POST", "/v2/models/{model}/infer", OwnTenant(Invoker)),
    rule("POST", "/v2/models/{model}/versions/{version}/infer", OwnTenant(Invoker)),
    rule("POST", "/v2/models/{model}/generate", OwnTenant(Invoker)),
    rule("POST", "/v2/models/{model}/versions/{version}/generate", OwnTenant(Invoker)),
    rule("POST", "/v2/models/{model}/generate_stream", OwnTenant(Invoker)),
    rule("POST", "/v2/models/{model}/versions/{version}/generate_stream", OwnTenant(Invoker)),
    rule("GET", "/v1/models", OwnTenant(Invoker)),
    rule("POST", "/v1/embeddings", OwnTenant(Invoker)),
    rule("POST", "/v1/classifications", OwnTenant(Invoker)),
    rule("POST", "/v1/completions", OwnTenant(Invoker)),
    rule("POST", "/v1/chat/completions", OwnTenant(Invoker)),
];

/// The rule of a request and the path's named segments, or None for a route not in the table.
pub fn rule_for(method: &Method, path: &str) -> Option<(&'static Rule, Vec<(&'static str, String)>)> {
    rule_in(ROUTES, method, path)
}

/// The rule of a request in `table` (the API's or the dashboard's).
pub fn rule_in(
    table: &'static [Rule],
    method: &Method,
    path: &str,
) -> Option<(&'static Rule, Vec<(&'static str, String)>)> {
    table.iter().filter(|r| r.method == method.as_str()).find_map(|r| captures(r.path, path).map(|c| (r, c)))
}

/// Matches a path against an actix pattern: `{name}` takes one segment, `{name:...}` (or a
/// segment ending in one, like `{revision}{folder:(/.*)?}`) takes the rest.
fn captures(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut found = Vec::new();
    let mut segments = path.trim_start_matches('/').split('/');
    for part in pattern.trim_start_matches('/').split('/') {
        let name = |p: &'static str| p.trim_start_matches('{').split(['}', ':']).next().unwrap_or_default();
        if part.contains(':') {
            // Whatever is left, even nothing: the handler judges the path it names.
            let rest: Vec<&str> = segments.by_ref().collect();
            found.push((name(part), rest.join("/")));
            return Some(found);
        }
        let segment = segments.next()?;
        if part.starts_with('{') {
            if segment.is_empty() {
                return None;
            }
            found.push((name(part), segment.to_owned()));
        } else if part != segment {
            return None;
        }
    }
    segments.next().is_none().then_some(found)
}

/// The checks the table asks of a request: 401 without a valid credential, 403 for a role
/// too low in the caller's own tenant, 404 for another tenant's path (as if it did not exist).
pub fn check(rule: &Rule, principal: &Principal, captures: &[(&str, String)]) -> Result<(), ApiError> {
    match (rule.need, &principal.scope) {
        (Need::Public | Need::Authenticated, _)
        | (Need::PlatformAdmin, Scope::PlatformAdmin)
        | (Need::Tenant(_), Scope::PlatformAdmin) => Ok(()),
        (Need::ApiKey, _) => match principal.credential {
            Credential::ApiKey => Ok(()),
            Credential::Token => Err(ApiError::forbidden("tokens are issued for API keys; send the key, not a token")),
        },
        (Need::PlatformAdmin, Scope::Tenant { tenant, .. }) => {
            match captures.iter().find(|(name, _)| *name == "tenant") {
                Some((_, named)) if named != tenant.name.as_str() => {
                    Err(ApiError::not_found(format!("tenant {named:?} not found")))
                }
                _ => Err(ApiError::forbidden("this needs a platform admin key")),
            }
        }
        (Need::Tenant(need), Scope::Tenant { tenant, role }) => {
            let named =
                captures.iter().find(|(name, _)| *name == "tenant").map(|(_, v)| v.as_str()).unwrap_or_default();
            if named != tenant.name.as_str() {
                return Err(ApiError::not_found(format!("tenant {named:?} not found")));
            }
            require_role(*role, need)
        }
        (Need::OwnTenant(_), Scope::PlatformAdmin) => {
            Err(ApiError::forbidden("platform admin keys belong to no tenant; call inference with a tenant key"))
        }
        (Need::OwnTenant(need), Scope::Tenant { role, .. }) => require_role(*role, need),
        (Need::AnyAdmin, Scope::PlatformAdmin) => Ok(()),
        (Need::AnyAdmin, Scope::Tenant { role, .. }) => require_role(*role, Role::Admin),
    }
}

/// The table as docs/API.md prints it.
pub fn markdown() -> String {
    markdown_of(ROUTES)
}

/// A route table (the API's or the dashboard's) as a Markdown table.
pub fn markdown_of(table: &[Rule]) -> String {
    let mut out = String::from("| method | route | needs |\n| --- | --- | --- |\n");
    for r in table {
        out.push_str(&format!("| {} | `{}` | {} |\n", r.method, r.path, r.need.describe()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_patterns_and_capture_names() {
        let (rule, found) =
            rule_for(&Method::GET, "/api/v1/tenants/acme/models/m/versions/3/files/a/b.json").expect("a file route");
        assert_eq!(rule.need, Need::Tenant(Role::Viewer));
        assert_eq!(found[0], ("tenant", "acme".to_owned()));
        assert_eq!(found.last(), Some(&("path", "a/b.json".to_owned())));
        let (rule, found) = rule_for(&Method::GET, "/hf/api/models/acme/m/tree/main/sub/dir").expect("tree");
        assert!(rule.path.contains("tree"));
        assert_eq!(found.last(), Some(&("revision", "main/sub/dir".to_owned())));
        assert!(rule_for(&Method::GET, "/api/v1/tenants/acme/models/m/extra").is_none());
        assert!(rule_for(&Method::POST, "/healthz").is_none());
        assert!(rule_for(&Method::GET, "/api/v1/tenants//models").is_none());
    }

    /// The text of docs/API.md between `<!-- {marker}:start -->` and its end marker.
    fn printed(marker: &str) -> &'static str {
        let docs = include_str!("../../../docs/API.md");
        let (open, close) = (format!("<!-- {marker}:start -->\n"), format!("<!-- {marker}:end -->"));
        let start = docs.find(&open).expect("start marker") + open.len();
        &docs[start..docs.find(&close).expect("end marker")]
    }

    #[test]
    fn the_api_docs_print_this_table() {
        assert_eq!(printed("route-table"), markdown(), "docs/API.md's route table differs from routes/table.rs");
    }

    #[test]
    fn the_api_docs_print_the_dashboards_pages() {
        assert_eq!(
            printed("page-table"),
            markdown_of(crate::dashboard::PAGES),
            "docs/API.md's page table differs from dashboard/mod.rs"
        );
    }
}
