use actix_web::body::SizedStream;
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use registry::files::Upload;
use registry::models::Model;
use registry::names::{Digest, FilePath};
use registry::versions::VersionFile;
use serde_json::json;

use super::extract::{FileSegment, VersionPath};
use crate::AppState;
use crate::auth::Principal;
use crate::body::upload_error;
use crate::error::{ApiError, ErrorCode};

/// The client's sha256 of the body, hex or base64; a mismatch rejects the file.
const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// Streams one file into a draft version (`path` may name folders); a body that stalls ends
/// with 408. Requires: developer.
#[utoipa::path(put, tag = "files", path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/files/{path}", params(VersionPath, FileSegment, ("x-checksum-sha256" = Option<String>, Header, description = "The body's sha256, hex or base64; a mismatch rejects the file")), request_body(content = crate::routes::schemas::Binary, content_type = "application/octet-stream"), responses((status = 201, body = registry::versions::VersionFile)))]
pub(super) async fn put(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    VersionPath { tenant, model, number }: VersionPath,
    segment: web::Path<FileSegment>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let file = segment.into_inner().path;
    let file = super::parse(FilePath::parse(&file))?;
    let declared = match req.headers().get(CHECKSUM_HEADER) {
        Some(value) => {
            let value = value.to_str().map_err(|_| ApiError::invalid("X-Checksum-Sha256 is not text"))?;
            Some(super::parse(Digest::parse(value))?)
        }
        None => None,
    };
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let upload = Upload { path: &file, declared: declared.as_ref(), content_length: length, body };
    let started = std::time::Instant::now();
    let recorded =
        state.registry.upload_file(&principal.actor(), &model, number, upload).await.map_err(upload_error)?;
    crate::metrics::upload(tenant.name.as_str(), recorded.size, started.elapsed());
    Ok(HttpResponse::Created().json(recorded))
}

/// Downloads one file of a version, byte for byte: `ETag` is the sha256, `If-None-Match`
/// answers 304, one `Range` answers 206, `HEAD` answers the headers alone. Requires: viewer.
#[utoipa::path(method(get, head), tag = "files", path = "/api/v1/tenants/{tenant}/models/{model}/versions/{version}/files/{path}", params(VersionPath, FileSegment, DownloadQuery), responses((status = 200, description = "The bytes, or a presigned URL with `?presigned=true`", content((crate::routes::schemas::Binary = "application/octet-stream"), (crate::routes::schemas::PresignedDownload = "application/json"))), (status = 206, description = "The range asked for", body = crate::routes::schemas::Binary, content_type = "application/octet-stream"), (status = 304, description = "Not modified (`If-None-Match`)")))]
pub(super) async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    VersionPath { model, number, .. }: VersionPath,
    segment: web::Path<FileSegment>,
    query: web::Query<DownloadQuery>,
) -> Result<HttpResponse, ApiError> {
    let file = segment.into_inner().path;
    let file = FilePath::parse(&file).map_err(|_| ApiError::not_found(format!("file {file:?} not found")))?;
    let file = state.registry.version_file(&model, number, &file).await?;
    if query.presigned {
        // Hand out a short-lived URL straight to the bucket instead of the bytes.
        let signed = state.registry.storage().sign_blob_get(&model.tenant_id, &file.digest, PRESIGNED_TTL).await?;
        return match signed {
            Some(signed) => Ok(HttpResponse::Ok()
                .json(json!({ "url": signed.url, "expires_in": PRESIGNED_TTL.as_secs(), "sha256": file.digest }))),
            None => Err(ApiError::new(
                ErrorCode::NotSupported,
                "this object store cannot presign URLs; download the file directly",
            )),
        };
    }
    send_file(&state, &req, &model, &file, HttpResponse::Ok()).await
}

/// How long a presigned download URL works.
const PRESIGNED_TTL: std::time::Duration = std::time::Duration::from_secs(900);

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DownloadQuery {
    #[serde(default)]
    presigned: bool,
}

/// Answers a download of `file`: `ETag` is the quoted sha256, `If-None-Match` answers 304,
/// one `Range` answers 206, `HEAD` the headers alone. `ok` carries any extra headers.
pub(super) async fn send_file(
    state: &AppState,
    req: &HttpRequest,
    model: &Model,
    file: &VersionFile,
    mut ok: actix_web::HttpResponseBuilder,
) -> Result<HttpResponse, ApiError> {
    let etag = format!("\"{}\"", file.digest);
    if header_matches_etag(req, &etag) {
        return Ok(ok.status(StatusCode::NOT_MODIFIED).insert_header((header::ETAG, etag)).finish());
    }
    let range = match req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => match ByteRange::parse(value, file.size) {
            ByteRange::Satisfiable(range) => Some(range),
            ByteRange::Ignored => None,
            ByteRange::Unsatisfiable => {
                return Err(ApiError::new(
                    ErrorCode::RangeNotSatisfiable,
                    format!("the range {value:?} is outside the file's {} bytes", file.size),
                )
                .with_header(header::CONTENT_RANGE, format!("bytes */{}", file.size)));
            }
        },
        None => None,
    };
    let mut response = ok;
    if let Some(r) = &range {
        response
            .status(StatusCode::PARTIAL_CONTENT)
            .insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end - 1, file.size)));
    }
    response
        .insert_header((header::CONTENT_TYPE, "application/octet-stream"))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, etag));
    let length = range.as_ref().map_or(file.size, |r| r.end - r.start);
    if req.method() == Method::HEAD {
        return Ok(response.body(SizedStream::new(length, futures::stream::empty::<Result<Bytes, ApiError>>())));
    }
    let content = state.registry.read_file(model, file, range).await?;
    Ok(response.body(SizedStream::new(length, content.into_stream())))
}

fn header_matches_etag(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag))
}

/// One `Range: bytes=…` request, resolved against the file's size. Several ranges or other
/// units are ignored (the whole file is sent), as RFC 9110 allows.
#[derive(Debug, PartialEq, Eq)]
enum ByteRange {
    Satisfiable(std::ops::Range<u64>),
    Unsatisfiable,
    Ignored,
}

impl ByteRange {
    fn parse(value: &str, size: u64) -> Self {
        let Some(spec) = value.trim().strip_prefix("bytes=") else { return ByteRange::Ignored };
        if spec.contains(',') {
            return ByteRange::Ignored;
        }
        let Some((first, last)) = spec.trim().split_once('-') else { return ByteRange::Ignored };
        let (first, last) = (first.trim(), last.trim());
        let range = match (first.parse::<u64>(), last.parse::<u64>()) {
            // bytes=-N: the last N bytes
            _ if first.is_empty() => match last.parse::<u64>() {
                Ok(0) | Err(_) => return if last == "0" { ByteRange::Unsatisfiable } else { ByteRange::Ignored },
                Ok(n) => size.saturating_sub(n)..size,
            },
            (Ok(start), _) if last.is_empty() => start..size,
            (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(size),
            _ => return ByteRange::Ignored,
        };
        if range.start >= size || range.is_empty() { ByteRange::Unsatisfiable } else { ByteRange::Satisfiable(range) }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange::{self, Ignored, Satisfiable, Unsatisfiable};

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(ByteRange::parse("bytes=0-0", 10), Satisfiable(0..1));
        assert_eq!(ByteRange::parse("bytes=2-5", 10), Satisfiable(2..6));
        assert_eq!(ByteRange::parse("bytes=8-", 10), Satisfiable(8..10));
        assert_eq!(ByteRange::parse("bytes=5-100", 10), Satisfiable(5..10));
        assert_eq!(ByteRange::parse("bytes=-3", 10), Satisfiable(7..10));
        assert_eq!(ByteRange::parse("bytes=-30", 10), Satisfiable(0..10));
        assert_eq!(ByteRange::parse("bytes=10-", 10), Unsatisfiable);
        assert_eq!(ByteRange::parse("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(ByteRange::parse("bytes=-0", 10), Unsatisfiable);
        assert_eq!(ByteRange::parse("bytes=5-2", 10), Ignored);
        assert_eq!(ByteRange::parse("bytes=0-1,4-5", 10), Ignored);
        assert_eq!(ByteRange::parse("items=0-1", 10), Ignored);
        assert_eq!(ByteRange::parse("bytes=x-1", 10), Ignored);
    }
}
