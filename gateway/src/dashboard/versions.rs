//! A version's page (files, sizes, digests, lineage, who made it), uploading files from the
//! browser (a new version, or more files into a draft) and committing, with each validation
//! problem shown beside the file it concerns.

use actix_multipart::{Field, Multipart};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use askama::Template;
use futures::TryStreamExt as _;
use registry::Problem;
use registry::files::Upload;
use registry::models::Model;
use registry::names::{FilePath, Role};
use registry::quarantine::Quarantine;
use registry::versions::{NewVersion, Version, VersionStatus};

use super::actors::{Actor, KeyNames};
use super::view::{Chrome, Session, bytes, when, when_opt};
use super::{PageError, html, html_with, see_other};
use crate::AppState;
use crate::error::ApiError;
use crate::routes::{model_in, version_number};

struct FileRow {
    path: String,
    size: String,
    digest: String,
    problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "version.html")]
struct VersionPage {
    chrome: Chrome,
    tenant: String,
    model: String,
    number: i64,
    status: &'static str,
    architecture: String,
    description: String,
    derived_from: String,
    created_by: Actor,
    created: String,
    committed: String,
    total_size: String,
    files: Vec<FileRow>,
    /// Problems of the last commit that concern no one file.
    problems: Vec<String>,
    can_write: bool,
    draft: bool,
    /// Why inference refuses the version, when its calls took runners down.
    quarantine: Option<QuarantineView>,
}

struct QuarantineView {
    reason: String,
    since: String,
    strikes: i64,
    version_id: String,
}

impl From<Quarantine> for QuarantineView {
    fn from(q: Quarantine) -> Self {
        Self { reason: q.reason, since: when(q.since), strikes: q.strikes, version_id: q.version_id }
    }
}

/// Who uploaded `v`, by the key's name.
async fn uploader(state: &AppState, model: &Model, v: &Version) -> Result<Actor, PageError> {
    let names = KeyNames::look_up(&state.registry, Some(&model.tenant_id), [v.created_by.as_str()]).await?;
    Ok(names.actor(&v.created_by))
}

fn version_page(
    session: &Session,
    tenant: &str,
    model: &Model,
    v: Version,
    uploader: Actor,
    problems: &[Problem],
    quarantine: Option<Quarantine>,
) -> VersionPage {
    let about = |file: Option<&str>| -> Vec<String> {
        problems.iter().filter(|p| p.file.as_deref() == file).map(|p| p.message.clone()).collect()
    };
    let mut files: Vec<FileRow> = v
        .files
        .iter()
        .map(|f| FileRow {
            path: f.path.to_string(),
            size: bytes(f.size),
            digest: f.digest.to_string(),
            problems: about(Some(f.path.as_str())),
        })
        .collect();
    // A problem about a file the version lacks gets a row of its own.
    for p in problems {
        if let Some(file) = &p.file
            && !files.iter().any(|f| &f.path == file)
        {
            files.push(FileRow {
                path: file.clone(),
                size: "missing".into(),
                digest: String::new(),
                problems: about(Some(file)),
            });
        }
    }
    VersionPage {
        chrome: session.chrome("models"),
        tenant: tenant.to_owned(),
        model: model.name.to_string(),
        number: v.number,
        status: v.status.as_str(),
        architecture: v.architecture.unwrap_or_default(),
        description: v.description,
        derived_from: v.derived_from.unwrap_or_default(),
        created_by: uploader,
        created: when(v.created_at),
        committed: when_opt(v.committed_at),
        total_size: bytes(v.files.iter().map(|f| f.size).sum()),
        files,
        problems: about(None),
        can_write: session.can(Role::Developer),
        draft: v.status == VersionStatus::Draft,
        quarantine: quarantine.map(QuarantineView::from),
    }
}

/// A version with its files, and its quarantine if it has one. Requires: viewer.
#[get("/admin/tenants/{tenant}/models/{model}/versions/{version}")]
async fn page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, model, version) = path.into_inner();
    let model = model_in(&state, &session.principal, &tenant, &model, Role::Viewer).await?;
    let v = state.registry.version(&model, version_number(&version)?).await?;
    let quarantine = state.registry.quarantine(&v.id).await?;
    let uploader = uploader(&state, &model, &v).await?;
    html(&version_page(&session, &tenant, &model, v, uploader, &[], quarantine))
}

/// Where a file part goes in the version: its name, or for a folder picked whole, its path
/// below that folder (browsers send `folder/sub/file`).
fn file_path(field: &Field) -> Option<String> {
    let name = field.content_disposition()?.get_filename()?.replace('\\', "/");
    if name.is_empty() {
        return None;
    }
    if field.name() == Some("folder") {
        return Some(name.split_once('/').map_or(name.as_str(), |(_, rest)| rest).to_owned());
    }
    Some(name)
}

/// The text of a small form field.
async fn text(field: &mut Field) -> Result<String, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.try_next().await.map_err(|e| ApiError::invalid(e.to_string()))? {
        out.extend_from_slice(&chunk);
        if out.len() > 64 * 1024 {
            return Err(ApiError::invalid("a text field is longer than 64 KiB"));
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid("a text field is not UTF-8"))
}

/// Streams every file of the form into a draft: `number`'s, or a new one (made at the first
/// file, with the form's description) when None. Answers the draft's number.
async fn receive(
    state: &AppState,
    session: &Session,
    tenant: &str,
    model: &Model,
    mut number: Option<i64>,
    mut form: Multipart,
) -> Result<i64, PageError> {
    let actor = session.principal.actor();
    let mut description = String::new();
    let mut received = 0;
    while let Some(mut field) =
        form.try_next().await.map_err(|e| ApiError::invalid(format!("the form is malformed: {e}")))?
    {
        let Some(path) = file_path(&field) else {
            if field.name() == Some("description") {
                description = text(&mut field).await?;
            } else {
                text(&mut field).await?;
            }
            continue;
        };
        let path = FilePath::parse(&path)?;
        let draft = match number {
            Some(n) => n,
            None => {
                let new = NewVersion { description: description.trim().to_owned(), ..NewVersion::default() };
                let n = state.registry.create_version(&actor, model, new).await?.number;
                number = Some(n);
                n
            }
        };
        // actix's multipart errors are not Send; the registry keeps the cause as text.
        let body = field.map_err(|e| std::io::Error::other(e.to_string()));
        let file = Upload { path: &path, declared: None, content_length: None, body };
        let started = std::time::Instant::now();
        let recorded = state.registry.upload_file(&actor, model, draft, file).await?;
        crate::metrics::upload(tenant, recorded.size, started.elapsed());
        received += 1;
    }
    match number {
        Some(n) if received > 0 => Ok(n),
        _ => Err(ApiError::invalid("choose at least one file (or a folder) to upload").into()),
    }
}

/// Uploads files as a new draft version, then shows it. Requires: developer.
#[post("/admin/tenants/{tenant}/models/{model}/versions")]
async fn upload(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
    form: Multipart,
) -> Result<HttpResponse, PageError> {
    let (tenant, model) = path.into_inner();
    let model = model_in(&state, &session.principal, &tenant, &model, Role::Developer).await?;
    let number = receive(&state, &session, &tenant, &model, None, form).await?;
    Ok(see_other(&format!("/admin/tenants/{tenant}/models/{}/versions/{number}", model.name)))
}

/// Uploads more files into a draft. Requires: developer.
#[post("/admin/tenants/{tenant}/models/{model}/versions/{version}/files")]
async fn add_files(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String, String)>,
    form: Multipart,
) -> Result<HttpResponse, PageError> {
    let (tenant, model, version) = path.into_inner();
    let model = model_in(&state, &session.principal, &tenant, &model, Role::Developer).await?;
    let number = receive(&state, &session, &tenant, &model, Some(version_number(&version)?), form).await?;
    Ok(see_other(&format!("/admin/tenants/{tenant}/models/{}/versions/{number}", model.name)))
}

/// Validates and commits a draft; what fails validation is shown beside its file.
/// Requires: developer.
#[post("/admin/tenants/{tenant}/models/{model}/versions/{version}/commit")]
async fn commit(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, PageError> {
    let (tenant, model, version) = path.into_inner();
    let model = model_in(&state, &session.principal, &tenant, &model, Role::Developer).await?;
    let number = version_number(&version)?;
    match state
        .registry
        .commit_version(&session.principal.actor(), &model, number, state.runners.largest_budget())
        .await
    {
        Ok(v) => Ok(see_other(&format!("/admin/tenants/{tenant}/models/{}/versions/{}", model.name, v.number))),
        Err(registry::Error::Validation(problems)) => {
            let v = state.registry.version(&model, number).await?;
            let uploader = uploader(&state, &model, &v).await?;
            let view = version_page(&session, &tenant, &model, v, uploader, &problems, None);
            html_with(StatusCode::UNPROCESSABLE_ENTITY, &view)
        }
        Err(e) => Err(e.into()),
    }
}
