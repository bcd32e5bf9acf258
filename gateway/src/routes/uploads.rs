//! Resumable uploads of one file of a draft: start a session, send chunks (any order, in
//! parallel, across connections and gateway restarts), ask what arrived, complete or abort.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use registry::names::{Digest, FilePath};
use registry::page::PageRequest;
use registry::uploads::{NewUpload, Started};
use serde::Deserialize;

use super::extract::{ChunkSegment, IdSegment, VersionPath};
use crate::AppState;
use crate::auth::Principal;
use crate::body::{BodyLimits, upload_error};
use crate::error::ApiError;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StartUpload {
    path: String,
    size: u64,
    sha256: String,
    chunk_size: Option<u64>,
    /// Seconds until the session expires; at most the gateway's `upload_session_ttl_secs`.
    expires_in: Option<u64>,
    /// Answer a presigned URL to PUT the whole file straight into the bucket (S3, Azure, GCS).
    #[serde(default)]
    presigned: bool,
}

/// 201 with `"status": "open"` and the session, or 200 with `"status": "complete"` and the
/// recorded file when the tenant already stores this content. Requires: developer.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/uploads", params(VersionPath), tag = "uploads", request_body = StartUpload, responses((status = 201, description = "`status: open`: send the chunks", body = registry::uploads::Started), (status = 200, description = "`status: complete`: the tenant stores this content already", body = registry::uploads::Started)))]
pub(super) async fn start(
    state: web::Data<AppState>,
    principal: Principal,
    VersionPath { model, number, .. }: VersionPath,
    body: web::Json<StartUpload>,
) -> Result<HttpResponse, ApiError> {
    let file = super::parse(FilePath::parse(&body.path))?;
    let sha256 = super::parse(Digest::parse(&body.sha256))?;
    let ttl = state.upload_session_ttl;
    let expires_in = body.expires_in.map_or(ttl, |s| Duration::from_secs(s).min(ttl));
    let new = NewUpload {
        path: &file,
        size: body.size,
        sha256: &sha256,
        chunk_size: body.chunk_size,
        expires_in,
        presigned: body.presigned,
    };
    let started = state.registry.start_upload(&principal.actor(), &model, number, new).await?;
    Ok(match started {
        Started::Open(_) => HttpResponse::Created().json(started),
        // The tenant has this content: the file is recorded and nothing needs sending.
        Started::Complete { .. } => HttpResponse::Ok().json(started),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListUploads {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The draft's live sessions, oldest first, paginated. Requires: developer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/uploads", tag = "uploads", params(VersionPath, ListUploads), responses((status = 200, body = registry::page::Page<registry::uploads::UploadSession>)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    VersionPath { model, number, .. }: VersionPath,
    query: web::Query<ListUploads>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    Ok(HttpResponse::Ok().json(state.registry.list_uploads(&model, number, &page).await?))
}

/// What the server has. Requires: developer.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/uploads/{id}", params(VersionPath, IdSegment), tag = "uploads", responses((status = 200, body = registry::uploads::UploadSession)))]
pub(super) async fn status(
    state: web::Data<AppState>,
    VersionPath { model, .. }: VersionPath,
    segment: web::Path<IdSegment>,
) -> Result<HttpResponse, ApiError> {
    let id = segment.into_inner().id;
    Ok(HttpResponse::Ok().json(state.registry.upload_session(&model, &id).await?))
}

/// Chunk `index` (bytes `index * chunk_size ..`, exactly `chunk_size` long but for the last).
/// A body that stalls ends with 408; chunks beyond the gateway's buffer budget get 429.
/// Requires: developer.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/uploads/{id}/chunks/{index}", params(VersionPath, ChunkSegment), tag = "uploads", request_body(content = crate::routes::schemas::Binary, content_type = "application/octet-stream"), responses((status = 200, body = registry::uploads::UploadSession)))]
pub(super) async fn chunk(
    state: web::Data<AppState>,
    VersionPath { tenant, model, .. }: VersionPath,
    segment: web::Path<ChunkSegment>,
    limits: web::Data<BodyLimits>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ChunkSegment { id, index } = segment.into_inner();
    let index = index.parse::<u64>().map_err(|_| ApiError::invalid("the chunk index is a number"))?;
    // The chunk is held whole until it is stored: room for it is taken from the budget first
    // (an unknown session or a bad index is refused by put_chunk, which holds nothing then).
    let session = state.registry.upload_session(&model, &id).await?;
    let expected = match index.checked_mul(session.chunk_size) {
        Some(first) if first < session.size => session.chunk_size.min(session.size - first),
        _ => 0,
    };
    let _room = limits.chunk_room(&model.tenant_id, expected)?;
    let started = std::time::Instant::now();
    let session = state.registry.put_chunk(&model, &id, index, body).await.map_err(upload_error)?;
    let bytes = session.chunk_size.min(session.size.saturating_sub(index.saturating_mul(session.chunk_size)));
    crate::metrics::upload(tenant.name.as_str(), bytes, started.elapsed());
    Ok(HttpResponse::Ok().json(session))
}

/// Assembles the chunks, checks the declared size and sha256, records the file. Requires: developer.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/uploads/{id}/complete", params(VersionPath, IdSegment), tag = "uploads", responses((status = 201, body = registry::versions::VersionFile)))]
pub(super) async fn complete(
    state: web::Data<AppState>,
    principal: Principal,
    VersionPath { model, .. }: VersionPath,
    segment: web::Path<IdSegment>,
) -> Result<HttpResponse, ApiError> {
    let id = segment.into_inner().id;
    Ok(HttpResponse::Created().json(state.registry.complete_upload(&principal.actor(), &model, &id).await?))
}

/// Requires: developer.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/uploads/{id}", params(VersionPath, IdSegment), tag = "uploads", responses((status = 204, description = "Aborted")))]
pub(super) async fn abort(
    state: web::Data<AppState>,
    VersionPath { model, .. }: VersionPath,
    segment: web::Path<IdSegment>,
) -> Result<HttpResponse, ApiError> {
    let id = segment.into_inner().id;
    state.registry.abort_upload(&model, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
