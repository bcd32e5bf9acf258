//! The dashboard's stylesheet and script, compiled into the binary: nothing is fetched from
//! another site, and the files change only with the binary.

use actix_web::{HttpResponse, get, web};

use super::PageError;
use crate::error::ApiError;

const FILES: &[(&str, &str, &str)] = &[
    ("app.css", "text/css; charset=utf-8", include_str!("../../../web/static/app.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../web/static/app.js")),
];

/// One asset. Requires: nothing.
#[get("/admin/static/{file}")]
async fn file(path: web::Path<String>) -> Result<HttpResponse, PageError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(name, ..)| *name == path.as_str())
        .ok_or_else(|| ApiError::not_found(format!("no asset {:?}", path.as_str())))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header(("cache-control", "public, max-age=300"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(*body))
}
