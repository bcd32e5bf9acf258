use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, put, web};
use registry::names::{Digest, FilePath, Role};

use super::{model_in, version_number};
use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// The client's sha256 of the body, hex or base64; a mismatch rejects the file.
const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// Streams one file into a draft version (`path` may name folders). Requires: developer.
#[put("/api/v1/tenants/{tenant}/models/{model}/versions/{version}/files/{path:.*}")]
async fn put(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, version, file) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Developer).await?;
    let number = version_number(&version)?;
    let file = super::parse(FilePath::parse(&file))?;
    let declared = match req.headers().get(CHECKSUM_HEADER) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid_request", "X-Checksum-Sha256 is not text"))?;
            Some(super::parse(Digest::parse(value))?)
        }
        None => None,
    };
    let recorded =
        state.registry.upload_file(&principal.actor(), &model, number, &file, declared.as_ref(), body).await?;
    Ok(HttpResponse::Created().json(recorded))
}

/// Downloads one file of a version, byte for byte. Requires: viewer.
#[get("/api/v1/tenants/{tenant}/models/{model}/versions/{version}/files/{path:.*}")]
async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, model, version, file) = path.into_inner();
    let model = model_in(&state, &principal, &tenant, &model, Role::Viewer).await?;
    let file = FilePath::parse(&file).map_err(|_| ApiError::not_found(format!("file {file:?} not found")))?;
    let (file, content) = state.registry.open_file(&model, version_number(&version)?, &file).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((header::ETAG, format!("\"{}\"", file.digest)))
        .body(actix_web::body::SizedStream::new(file.size, content.into_stream())))
}
