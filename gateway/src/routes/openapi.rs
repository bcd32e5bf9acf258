//! The OpenAPI 3.1 document of the management and inference APIs, served at
//! `GET /api/v1/openapi.json`.
//!
//! Each handler describes its own operation (`#[utoipa::path]`, with the types it reads and
//! answers); the route table names the operations and adds what every route shares: whether it
//! needs a credential, and the error envelope of every status that is not a success. A test
//! checks that the document and the route table name the same routes.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::schemas::{ErrorBody, KServeError};
use super::table::{self, Need};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "modelgate",
        description = "Model registry and inference gateway: the management API (`/api/v1`), \
            OpenAI-compatible inference (`/v1`), KServe Open Inference Protocol v2 (`/v2`) and \
            Hugging Face Hub–compatible downloads (`/hf`). Errors are `{\"error\": {\"code\", \
            \"message\", \"type\"}}`; limits answer 429 with `Retry-After`.",
    ),
    components(schemas(ErrorBody, KServeError))
)]
struct ApiDoc;

/// The document, built once: the routes' operations (from the route table) with what the table
/// adds to each.
fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi().merge_from(table::Operations::openapi());
        FromTable.modify(&mut doc);
        doc
    })
}

/// This document. Requires: nothing.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(super) async fn serve() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().expect("the OpenAPI document serializes; this is a bug"));
    HttpResponse::Ok().content_type("application/json").body(json.as_str())
}

/// Adds what the route table knows to every operation: the bearer credential it needs (none for
/// public routes) and the error envelope for every status that is not a success.
struct FromTable;

impl Modify for FromTable {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`mg_…`), a token from `POST /api/v1/auth/token`, or a token of a configured \
                         OIDC issuer",
                    ))
                    .build(),
            ),
        );
        let error = |schema: RefOr<Schema>| -> RefOr<Response> {
            ResponseBuilder::new()
                .description("An error: `{\"error\": {\"code\", \"message\", \"type\"}}`")
                .content("application/json", Content::new(Some(schema)))
                .into()
        };
        let envelope = || Ref::from_schema_name("ErrorBody");
        let api_error = error(envelope().into());
        // KServe's handlers answer the protocol's `{"error": "…"}`; the gate in front of them
        // (credentials, the route table) answers the envelope.
        let kserve_error = error(
            Schema::OneOf(OneOfBuilder::new().item(envelope()).item(Ref::from_schema_name("KServeError")).build())
                .into(),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                let need = table::ROUTES
                    .iter()
                    .find(|r| r.method == method && openapi_path(r.path) == *path)
                    .map_or(Need::Public, |r| r.need);
                if need != Need::Public {
                    operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                }
                // utoipa names an operation after its handler; handlers of different modules
                // share names (`list`, `get`), so the tag and, for HEAD, the method tell them apart.
                let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
                let handler = operation.operation_id.take().unwrap_or_default();
                let suffix = if method == "HEAD" { "_head" } else { "" };
                operation.operation_id = Some(format!("{tag}_{handler}{suffix}"));
                let error = if path.starts_with("/v2/models") { &kserve_error } else { &api_error };
                operation.responses.responses.entry("default".to_owned()).or_insert_with(|| error.clone());
            }
        }
    }
}

/// Each operation of a path with its method, upper-case as in the route table.
fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("HEAD", item.head.as_mut()),
        ("POST", item.post.as_mut()),
        ("PUT", item.put.as_mut()),
        ("PATCH", item.patch.as_mut()),
        ("DELETE", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
    .collect()
}

/// An actix pattern as an OpenAPI path: `{path:.*}` is `{path}`, and the tree route's optional
/// folder suffix is left out (OpenAPI has no optional path segments; the document describes the
/// revision's root, and a folder follows as more segments).
fn openapi_path(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("route patterns close their braces; this is a bug");
        let segment = &rest[open + 1..close];
        match segment.split_once(':') {
            // `{folder:(/.*)?}`: optional and may hold slashes, so not an OpenAPI parameter.
            Some((_, regex)) if regex.starts_with('(') => {}
            Some((name, _)) => out.push_str(&format!("{{{name}}}")),
            None => out.push_str(&format!("{{{segment}}}")),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_names_every_route_of_the_table_and_no_other() {
        let mut documented = BTreeSet::new();
        let mut doc = document().clone();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, _) in operations(item) {
                documented.insert(format!("{method} {path}"));
            }
        }
        let table: BTreeSet<String> =
            table::ROUTES.iter().map(|r| format!("{} {}", r.method, openapi_path(r.path))).collect();
        assert_eq!(documented, table, "the OpenAPI document and routes/table.rs differ");
    }

    #[test]
    fn every_path_parameter_is_declared_once() {
        let doc = serde_json::to_value(document()).expect("serializes");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let named: BTreeSet<&str> = path.split('{').skip(1).filter_map(|rest| rest.split('}').next()).collect();
            for (method, operation) in item.as_object().expect("a path item") {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                let unique: BTreeSet<&str> = declared.iter().copied().collect();
                assert_eq!(unique.len(), declared.len(), "{method} {path} declares a parameter twice: {declared:?}");
                assert_eq!(unique, named, "{method} {path} declares {declared:?}");
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut doc = document().clone();
        let mut seen = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                let id = operation.operation_id.clone().expect("every operation has an id");
                assert!(seen.insert(id.clone()), "{method} {path} repeats the operation id {id}");
            }
        }
    }

    #[test]
    fn operations_that_need_a_credential_say_so_and_public_ones_do_not() {
        let doc = serde_json::to_value(document()).expect("serializes");
        let whoami = &doc["paths"]["/api/v1/auth/whoami"]["get"];
        assert_eq!(whoami["security"][0]["bearer"], serde_json::json!([]));
        assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
        assert_eq!(
            whoami["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }

    #[test]
    fn actix_patterns_become_openapi_paths() {
        assert_eq!(openapi_path("/a/{tenant}/files/{path:.*}"), "/a/{tenant}/files/{path}");
        assert_eq!(
            openapi_path("/hf/api/models/{tenant}/{model}/tree/{revision}{folder:(/.*)?}"),
            "/hf/api/models/{tenant}/{model}/tree/{revision}"
        );
    }
}
