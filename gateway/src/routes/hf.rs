//! A Hugging Face Hub–compatible, read-only view of a tenant's models, so `huggingface_hub`
//! and other Hub clients download from modelgate with `HF_ENDPOINT=<gateway>/hf` and the
//! tenant's key as `HF_TOKEN`. Repos are `tenant/model`; a revision is `main` (the newest
//! ready version), a version number, a version's commit id, or an alias.

use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse, web};
use registry::models::Model;
use registry::names::{FilePath, Role};
use registry::versions::{Version, VersionFile};
use serde_json::json;

use super::files::send_file;
use super::model_in;
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// The Hub's error header; its clients turn these codes into their own exceptions.
const ERROR_CODE: HeaderName = HeaderName::from_static("x-error-code");

pub(crate) fn hub_error(code: &'static str) -> impl Fn(ApiError) -> ApiError {
    move |e| if e.status().as_u16() == 404 { e.with_header(ERROR_CODE, code.to_owned()) } else { e }
}

async fn repo(state: &AppState, principal: &Principal, tenant: &str, model: &str) -> Result<Model, ApiError> {
    model_in(state, principal, tenant, model, Role::Viewer).await.map_err(hub_error("RepoNotFound"))
}

async fn revision(state: &AppState, model: &Model, revision: &str) -> Result<Version, ApiError> {
    state.registry.resolve_revision(model, revision).await.map_err(|e| hub_error("RevisionNotFound")(e.into()))
}

/// `GET|HEAD /hf/{tenant}/{model}/resolve/{revision}/{path}`. Requires: viewer.
#[utoipa::path(method(get, head), tag = "huggingface", path = "/hf/{tenant}/{model}/resolve/{revision}/{path}", params(("tenant" = String, Path), ("model" = String, Path), ("revision" = String, Path), ("path" = String, Path)), responses((status = 200, body = crate::routes::schemas::Binary, content_type = "application/octet-stream"), (status = 206, body = crate::routes::schemas::Binary, content_type = "application/octet-stream"), (status = 304, description = "Not modified")))]
pub(super) async fn resolve(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, rev, file) = path.into_inner();
    let model = repo(&state, &principal, &tenant, &model).await?;
    let version = revision(&state, &model, &rev).await?;
    let entry_not_found = || ApiError::not_found(format!("{file:?} is not in {tenant}/{}@{rev}", model.name));
    let path = FilePath::parse(&file).map_err(|_| hub_error("EntryNotFound")(entry_not_found()))?;
    let file =
        version.files.iter().find(|f| f.path == path).ok_or_else(|| hub_error("EntryNotFound")(entry_not_found()))?;
    let mut ok = HttpResponse::Ok();
    ok.insert_header(("x-repo-commit", version.commit_id()))
        .insert_header(("x-linked-etag", format!("\"{}\"", file.digest)))
        .insert_header(("x-linked-size", file.size.to_string()));
    send_file(&state, &req, &model, file, ok).await
}

/// `GET /hf/api/models/{tenant}/{model}/revision/{revision}`: the revision's commit and files. Requires: viewer.
#[utoipa::path(get, path = "/hf/api/models/{tenant}/{model}/revision/{revision}", tag = "huggingface", responses((status = 200, body = crate::routes::schemas::HubModelInfo)))]
pub(super) async fn info(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, rev) = path.into_inner();
    let model = repo(&state, &principal, &tenant, &model).await?;
    let version = revision(&state, &model, &rev).await?;
    Ok(HttpResponse::Ok().json(model_info(&tenant, &model, &version)))
}

/// `GET /hf/api/models/{tenant}/{model}`: as above for `main`. Requires: viewer.
#[utoipa::path(get, path = "/hf/api/models/{tenant}/{model}", tag = "huggingface", responses((status = 200, body = crate::routes::schemas::HubModelInfo)))]
pub(super) async fn info_main(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model) = path.into_inner();
    let model = repo(&state, &principal, &tenant, &model).await?;
    let version = revision(&state, &model, "main").await?;
    Ok(HttpResponse::Ok().json(model_info(&tenant, &model, &version)))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TreeQuery {
    #[serde(default)]
    recursive: bool,
}

/// `GET /hf/api/models/{tenant}/{model}/tree/{revision}[/{folder}]`: files and folders, as
/// `snapshot_download` lists them. Requires: viewer.
#[utoipa::path(get, tag = "huggingface", path = "/hf/api/models/{tenant}/{model}/tree/{revision}", params(("tenant" = String, Path), ("model" = String, Path), ("revision" = String, Path), TreeQuery), responses((status = 200, body = Vec<crate::routes::schemas::HubTreeEntry>)))]
pub(super) async fn tree(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String, String)>,
    query: web::Query<TreeQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, rev, folder) = path.into_inner();
    let model = repo(&state, &principal, &tenant, &model).await?;
    let version = revision(&state, &model, &rev).await?;
    let prefix = folder.trim_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    let mut entries = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    for f in version.files.iter().filter(|f| f.path.as_str().starts_with(&prefix)) {
        let rest = &f.path.as_str()[prefix.len()..];
        // Every folder between the prefix and the file, or only the first level when not recursive.
        let parts: Vec<&str> = rest.split('/').collect();
        for depth in 1..parts.len() {
            folders.insert(format!("{prefix}{}", parts[..depth].join("/")));
            if !query.recursive {
                break;
            }
        }
        if query.recursive || parts.len() == 1 {
            entries.push(json!({
                "type": "file",
                "oid": &f.digest.as_hex()[..40],
                "size": f.size,
                "path": f.path,
                "lfs": { "oid": f.digest, "size": f.size, "pointerSize": lfs_pointer_size(f) },
            }));
        }
    }
    if !prefix.is_empty() && entries.is_empty() && folders.is_empty() {
        return Err(hub_error("EntryNotFound")(ApiError::not_found(format!(
            "no folder {prefix:?} in {tenant}/{}@{rev}",
            model.name
        ))));
    }
    let dirs =
        folders.into_iter().map(|path| json!({ "type": "directory", "oid": "0".repeat(40), "size": 0, "path": path }));
    Ok(HttpResponse::Ok().json(dirs.chain(entries).collect::<Vec<_>>()))
}

fn model_info(tenant: &str, model: &Model, version: &Version) -> serde_json::Value {
    let id = format!("{tenant}/{}", model.name);
    let siblings: Vec<_> = version
        .files
        .iter()
        .map(|f| {
            json!({ "rfilename": f.path, "size": f.size, "lfs": { "sha256": f.digest, "size": f.size, "pointerSize": lfs_pointer_size(f) } })
        })
        .collect();
    json!({
        "_id": version.commit_id(),
        "id": id,
        "modelId": id,
        "sha": version.commit_id(),
        "private": true,
        "disabled": false,
        "gated": false,
        "tags": model.tags,
        "pipeline_tag": match model.task {
            registry::names::Task::Embedding => "feature-extraction",
            registry::names::Task::Generation => "text-generation",
            registry::names::Task::Classification => "text-classification",
        },
        "library_name": "sentence-transformers",
        "siblings": siblings,
    })
}

/// What a Git LFS pointer to this file would weigh; Hub clients read it.
fn lfs_pointer_size(f: &VersionFile) -> usize {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n", f.digest, f.size).len()
}
