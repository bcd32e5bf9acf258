//! The route table: every route, what it requires and which handler serves it. The gateway
//! enforces it before any handler runs (a route missing from it is refused), routes requests
//! by it, documents it (docs/API.md prints it, and a test keeps the two equal; the OpenAPI
//! document's operations come from it), and the end-to-end matrix test calls every route with
//! every role, in the caller's own tenant and in another.

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

/// The one list of routes: each route's method(s), pattern, need and handler, said once. From
/// it come [`ROUTES`] (which the gateway enforces before any handler runs, and docs/API.md
/// prints), [`configure`] (actix's routing, in this order: the inference routes, the hot path,
/// come first) and the operations of the OpenAPI document; a handler cannot be served without
/// a need.
macro_rules! routes {
    ($($($method:ident),+ $path:expr => $need:expr, $module:ident::$handler:ident;)+) => {
        /// Every route the gateway serves.
        pub const ROUTES: &[Rule] = &[$($(rule(stringify!($method), $path, $need),)+)+];

        /// Registers every route's handler.
        pub(crate) fn configure(cfg: &mut actix_web::web::ServiceConfig) {
            $(cfg.service(
                actix_web::web::resource($path)
                    .guard(Methods(&[$(stringify!($method)),+]))
                    .to(super::$module::$handler),
            );)+
        }

        /// Every handler the list serves, as `module::handler`.
        #[cfg(test)]
        const HANDLERS: &[&str] = &[$(concat!(stringify!($module), "::", stringify!($handler))),+];

        /// The routes' operations, as their handlers describe them.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($(super::$module::$handler),+))]
        pub(super) struct Operations;
    };
}

routes! {
    GET "/v1/models" => OwnTenant(Invoker), openai::models;
    POST "/v1/embeddings" => OwnTenant(Invoker), openai::embeddings;
    POST "/v1/classifications" => OwnTenant(Invoker), classifications::classifications;
    POST "/v1/completions" => OwnTenant(Invoker), completions::completions;
    POST "/v1/chat/completions" => OwnTenant(Invoker), completions::chat_completions;
    GET "/v2/models/{model}" => OwnTenant(Invoker), kserve::model_metadata;
    GET "/v2/models/{model}/versions/{version}" => OwnTenant(Invoker), kserve::version_metadata;
    GET "/v2/models/{model}/ready" => OwnTenant(Invoker), kserve::model_ready;
    GET "/v2/models/{model}/versions/{version}/ready" => OwnTenant(Invoker), kserve::version_ready;
    POST "/v2/models/{model}/infer" => OwnTenant(Invoker), kserve::model_infer;
    POST "/v2/models/{model}/versions/{version}/infer" => OwnTenant(Invoker), kserve::version_infer;
    POST "/v2/models/{model}/generate" => OwnTenant(Invoker), kserve_generate::model_generate;
    POST "/v2/models/{model}/versions/{version}/generate" => OwnTenant(Invoker), kserve_generate::version_generate;
    POST "/v2/models/{model}/generate_stream" => OwnTenant(Invoker), kserve_generate::model_generate_stream;
    POST "/v2/models/{model}/versions/{version}/generate_stream" => OwnTenant(Invoker), kserve_generate::version_generate_stream;
    GET "/healthz" => Public, health::healthz;
    GET "/readyz" => Public, health::readyz;
    GET "/.well-known/jwks.json" => Public, auth_token::jwks;
    GET "/api/v1/openapi.json" => Public, openapi::serve;
    POST "/api/v1/auth/token" => ApiKey, auth_token::issue;
    GET "/api/v1/auth/whoami" => Need::Authenticated, auth_token::whoami;
    POST "/api/v1/tenants" => PlatformAdmin, tenants::create;
    GET "/api/v1/tenants" => PlatformAdmin, tenants::list;
    POST "/api/v1/admin/gc" => PlatformAdmin, admin::gc;
    GET "/api/v1/admin/runners" => PlatformAdmin, runners::list;
    DELETE "/api/v1/admin/quarantine/{version_id}" => PlatformAdmin, admin::clear_quarantine;
    POST "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/load" => PlatformAdmin, runners::load;
    POST "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/unload" => PlatformAdmin, runners::unload;
    POST "/api/v1/admin/tenants/{tenant}/models/{model}/versions/{version}/pin" => PlatformAdmin, runners::pin;
    PUT "/api/v1/tenants/{tenant}/quotas" => PlatformAdmin, tenants::set_quotas;
    POST "/api/v1/tenants/{tenant}/suspend" => PlatformAdmin, tenants::suspend;
    POST "/api/v1/tenants/{tenant}/resume" => PlatformAdmin, tenants::resume;
    GET "/api/v1/tenants/{tenant}/quotas" => Tenant(Admin), tenants::quotas;
    GET "/api/v1/tenants/{tenant}/audit" => Tenant(Admin), audit::list;
    GET "/api/v1/audit" => Need::AnyAdmin, audit::search;
    GET "/api/v1/tenants/{tenant}/usage" => Tenant(Admin), usage::usage;
    POST "/api/v1/tenants/{tenant}/keys" => Tenant(Admin), keys::create;
    GET "/api/v1/tenants/{tenant}/keys" => Tenant(Admin), keys::list;
    PATCH "/api/v1/tenants/{tenant}/keys/{id}" => Tenant(Admin), keys::update;
    DELETE "/api/v1/tenants/{tenant}/keys/{id}" => Tenant(Admin), keys::revoke;
    POST "/api/v1/tenants/{tenant}/models" => Tenant(Developer), models::create;
    GET "/api/v1/tenants/{tenant}/models" => Tenant(Viewer), models::list;
    GET model!("") => Tenant(Viewer), models::get;
    PATCH model!("") => Tenant(Developer), models::update;
    DELETE model!("") => Tenant(Developer), models::remove;
    GET model!("/aliases") => Tenant(Viewer), aliases::list;
    PUT model!("/aliases/{alias}") => Tenant(Developer), aliases::put;
    DELETE model!("/aliases/{alias}") => Tenant(Developer), aliases::remove;
    GET model!("/aliases/{alias}/history") => Tenant(Viewer), aliases::history;
    POST model!("/versions") => Tenant(Developer), versions::create;
    GET model!("/versions") => Tenant(Viewer), versions::list;
    GET version!("") => Tenant(Viewer), versions::get;
    POST version!("/commit") => Tenant(Developer), versions::commit;
    POST version!("/archive") => Tenant(Developer), versions::archive;
    PUT version!("/files/{path:.*}") => Tenant(Developer), files::put;
    GET, HEAD version!("/files/{path:.*}") => Tenant(Viewer), files::get;
    POST version!("/uploads") => Tenant(Developer), uploads::start;
    GET version!("/uploads") => Tenant(Developer), uploads::list;
    GET version!("/uploads/{id}") => Tenant(Developer), uploads::status;
    DELETE version!("/uploads/{id}") => Tenant(Developer), uploads::abort;
    PUT version!("/uploads/{id}/chunks/{index}") => Tenant(Developer), uploads::chunk;
    POST version!("/uploads/{id}/complete") => Tenant(Developer), uploads::complete;
    GET, HEAD "/hf/{tenant}/{model}/resolve/{revision}/{path:.*}" => Tenant(Viewer), hf::resolve;
    GET "/hf/api/models/{tenant}/{model}" => Tenant(Viewer), hf::info_main;
    GET "/hf/api/models/{tenant}/{model}/revision/{revision}" => Tenant(Viewer), hf::info;
    GET "/hf/api/models/{tenant}/{model}/tree/{revision}{folder:(/.*)?}" => Tenant(Viewer), hf::tree;
    GET "/v2/health/live" => Public, kserve::live;
    GET "/v2/health/ready" => Public, kserve::ready;
    GET "/v2" => Public, kserve::server;
}

/// Admits a request whose method is one of these.
struct Methods(&'static [&'static str]);

impl actix_web::guard::Guard for Methods {
    fn check(&self, ctx: &actix_web::guard::GuardContext<'_>) -> bool {
        self.0.contains(&ctx.head().method.as_str())
    }
}

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

    /// A handler is served only from the list above, which gives it a need: a route handler
    /// the list does not name, or a route registered anywhere else (but the dashboard's, which
    /// has its own list of pages), fails here.
    #[test]
    fn every_route_is_served_from_the_list_with_a_need() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let routes = std::fs::read_dir(root.join("routes")).expect("the routes folder");
        for entry in routes {
            let path = entry.expect("a file").path();
            let module = path.file_stem().and_then(|s| s.to_str()).expect("a file name").to_owned();
            let source = std::fs::read_to_string(&path).expect("readable");
            // A handler is the function after its `#[utoipa::path(...)]` description.
            for described in source.split("\n#[utoipa::path(").skip(1) {
                let handler = described
                    .split("async fn ")
                    .nth(1)
                    .and_then(|rest| rest.split('(').next())
                    .expect("a handler after its description");
                let named = format!("{module}::{handler}");
                assert!(HANDLERS.contains(&named.as_str()), "{named} is a handler the route list does not serve");
            }
        }
        let mut stack = vec![root];
        while let Some(folder) = stack.pop() {
            for entry in std::fs::read_dir(&folder).expect("a source folder") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let source = std::fs::read_to_string(&path).expect("readable");
                let registers = [
                    "web::resource(",
                    "web::scope(",
                    ".route(\"",
                    "#[get(",
                    "#[post(",
                    "#[put(",
                    "#[patch(",
                    "#[delete(",
                    "#[route(",
                ]
                .iter()
                .any(|r| source.contains(r));
                let allowed =
                    path.ends_with("routes/table.rs") || path.components().any(|c| c.as_os_str() == "dashboard");
                assert!(allowed || !registers, "{} registers a route outside the route list", path.display());
            }
        }
    }

    #[test]
    fn the_api_docs_print_this_table() {
        assert_eq!(
            crate::api_docs_section("route-table"),
            markdown(),
            "docs/API.md's route table differs from routes/table.rs"
        );
    }

    #[test]
    fn the_api_docs_print_the_dashboards_pages() {
        assert_eq!(
            crate::api_docs_section("page-table"),
            markdown_of(crate::dashboard::PAGES),
            "docs/API.md's page table differs from dashboard/mod.rs"
        );
    }
}
