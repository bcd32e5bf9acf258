//! Versions: numbered per model, drafts while files are uploaded, immutable once committed.

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::audit::{self, Entry};
use crate::db::{new_id, now_ms};
use crate::models::Model;
use crate::names::{Digest, FilePath};
use crate::page::{Page, PageRequest};
use crate::{Actor, Error, Registry, Result, validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    /// Files can be uploaded; not callable.
    Draft,
    /// Validated and immutable; callable.
    Ready,
    /// Kept for audit; not callable, no alias may point at it.
    Archived,
    /// A draft abandoned past the draft lifetime: never callable; its files are collected.
    Failed,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Draft => "draft",
            VersionStatus::Ready => "ready",
            VersionStatus::Archived => "archived",
            VersionStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "draft" => Ok(VersionStatus::Draft),
            "ready" => Ok(VersionStatus::Ready),
            "archived" => Ok(VersionStatus::Archived),
            "failed" => Ok(VersionStatus::Failed),
            other => {
                Err(Error::Invalid(format!("unknown version status {other:?}: use draft, ready, archived or failed")))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VersionFile {
    pub path: FilePath,
    #[serde(rename = "sha256")]
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Version {
    #[serde(skip)]
    pub id: String,
    #[serde(rename = "version")]
    pub number: i64,
    pub status: VersionStatus,
    pub architecture: Option<String>,
    pub created_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "crate::db::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub committed_at: Option<i64>,
    #[serde(serialize_with = "crate::db::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub archived_at: Option<i64>,
    pub description: String,
    pub tags: Vec<String>,
    /// `model@N`: the version this one was derived from.
    pub derived_from: Option<String>,
    pub files: Vec<VersionFile>,
}

impl Version {
    /// A 40-hex-digit id of this immutable version, as Git-style clients (Hugging Face's)
    /// expect a revision's commit to look.
    pub fn commit_id(&self) -> String {
        use sha2::Digest as _;
        hex::encode(&sha2::Sha256::digest(format!("modelgate-version:{}", self.id).as_bytes())[..20])
    }
}

const COLUMNS: &str = "id, number, status, architecture, created_by, created_at, committed_at, archived_at, description, tags_json, derived_from";

/// What a new version is, beyond its files.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub description: String,
    pub tags: Vec<String>,
    /// Another version of the tenant, as `model@N`.
    pub derived_from: Option<String>,
}

fn from_row(r: &AnyRow) -> Result<Version> {
    Ok(Version {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        status: VersionStatus::parse(&r.try_get::<String, _>("status")?)?,
        architecture: r.try_get("architecture")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        committed_at: r.try_get("committed_at")?,
        archived_at: r.try_get("archived_at")?,
        description: r.try_get("description")?,
        tags: serde_json::from_str(&r.try_get::<String, _>("tags_json")?).unwrap_or_default(),
        derived_from: r.try_get("derived_from")?,
        files: Vec::new(),
    })
}

fn file_from_row(r: &AnyRow) -> Result<VersionFile> {
    Ok(VersionFile {
        path: FilePath::parse(&r.try_get::<String, _>("path")?)?,
        digest: Digest::parse(&r.try_get::<String, _>("sha256")?)?,
        size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or_default(),
    })
}

pub(crate) fn size_i64(size: u64) -> Result<i64> {
    i64::try_from(size).map_err(|_| Error::Invalid("file too large".into()))
}

impl Registry {
    pub async fn create_version(&self, actor: &Actor, model: &Model, new: NewVersion) -> Result<Version> {
        if new.description.chars().count() > 4096 {
            return Err(Error::Invalid("description is longer than 4096 characters".into()));
        }
        let tags = crate::models::check_tags(&new.tags)?;
        let derived_from = match &new.derived_from {
            Some(reference) => Some(self.lineage(&model.tenant_id, reference).await?),
            None => None,
        };
        let mut tx = self.db.begin().await?;
        // The increment takes the row's write lock, so concurrent drafts get distinct numbers.
        let row = sqlx::query("UPDATE models SET next_version = next_version + 1 WHERE id = $1 RETURNING next_version")
            .bind(&model.id)
            .fetch_one(&mut *tx)
            .await?;
        let number = row.try_get::<i64, _>("next_version")? - 1;
        let version = Version {
            id: new_id(),
            number,
            status: VersionStatus::Draft,
            architecture: None,
            created_by: actor.key_id.clone(),
            created_at: now_ms(),
            committed_at: None,
            archived_at: None,
            description: new.description,
            tags,
            derived_from,
            files: Vec::new(),
        };
        sqlx::query(
            "INSERT INTO model_versions (id, model_id, number, status, created_by, created_at, description, tags_json, derived_from)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&version.id)
        .bind(&model.id)
        .bind(number)
        .bind(version.status.as_str())
        .bind(&version.created_by)
        .bind(version.created_at)
        .bind(&version.description)
        .bind(serde_json::to_string(&version.tags).unwrap_or_else(|_| "[]".into()))
        .bind(version.derived_from.as_deref())
        .execute(&mut *tx)
        .await?;
        let after = serde_json::to_value(&version).ok();
        let target = format!("model/{}/version/{number}", model.name);
        audit::record(
            &mut tx,
            actor,
            Entry { tenant_id: Some(&model.tenant_id), action: "version.create", target, before: None, after },
        )
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Checks a lineage reference (`model@N`, committed, in the tenant) and returns it normalised.
    async fn lineage(&self, tenant_id: &str, reference: &str) -> Result<String> {
        let bad = || {
            Error::Invalid(format!(
                "derived_from {reference:?} must name a committed version of this tenant, as model@N"
            ))
        };
        let (name, number) = match crate::names::ModelRef::parse(reference) {
            Ok(crate::names::ModelRef::Version(name, number)) => (name, number),
            _ => return Err(bad()),
        };
        let source = self.model(tenant_id, &name).await.map_err(|_| bad())?;
        let version = self.version(&source, number).await.map_err(|_| bad())?;
        if version.status == VersionStatus::Draft {
            return Err(bad());
        }
        Ok(format!("{name}@{number}"))
    }

    /// One page of the model's versions by number, optionally of one status only.
    pub async fn list_versions(
        &self,
        model: &Model,
        status: Option<VersionStatus>,
        page: &PageRequest,
    ) -> Result<Page<Version>> {
        let after = match page.after.as_deref() {
            Some(key) => key.parse::<i64>().map_err(|_| crate::page::bad_cursor())?,
            None => 0,
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM model_versions WHERE model_id = $1 AND number > $2 AND ($3 = '' OR status = $3)
             ORDER BY number LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&model.id)
            .bind(after)
            .bind(status.map_or("", VersionStatus::as_str))
            .bind(page.fetch())
            .fetch_all(self.db.pool())
            .await?;
        let mut versions = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        if let (Some(first), Some(last)) = (versions.first(), versions.last()) {
            let files = sqlx::query(
                "SELECT f.version_id, f.path, f.sha256, f.size FROM version_files f
                 JOIN model_versions v ON v.id = f.version_id WHERE v.model_id = $1 AND v.number BETWEEN $2 AND $3
                 ORDER BY f.path",
            )
            .bind(&model.id)
            .bind(first.number)
            .bind(last.number)
            .fetch_all(self.db.pool())
            .await?;
            for row in &files {
                let version_id: String = row.try_get("version_id")?;
                if let Some(v) = versions.iter_mut().find(|v| v.id == version_id) {
                    v.files.push(file_from_row(row)?);
                }
            }
        }
        Ok(Page::new(versions, page, |v| v.number.to_string()))
    }

    pub async fn version(&self, model: &Model, number: i64) -> Result<Version> {
        let sql = format!("SELECT {COLUMNS} FROM model_versions WHERE model_id = $1 AND number = $2");
        let mut version = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&model.id)
            .bind(number)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found("version", format!("{}@{number}", model.name)))?;
        version.files = self.version_files(&version.id).await?;
        Ok(version)
    }

    async fn version_files(&self, version_id: &str) -> Result<Vec<VersionFile>> {
        let rows = sqlx::query("SELECT path, sha256, size FROM version_files WHERE version_id = $1 ORDER BY path")
            .bind(version_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(file_from_row).collect()
    }

    /// Validates a draft and makes it ready and immutable; on failure answers every problem
    /// and leaves the draft as it was, so the uploader can fix the files and commit again.
    /// `max_model_bytes`: the largest runner's memory budget, when known (see validate.rs).
    pub async fn commit_version(
        &self,
        actor: &Actor,
        model: &Model,
        number: i64,
        max_model_bytes: Option<u64>,
    ) -> Result<Version> {
        let version = self.version(model, number).await?;
        ensure_draft(&version, model)?;
        let files = &version.files;
        let architecture =
            match validate::validate(&self.storage, &model.tenant_id, model.task, files, max_model_bytes).await? {
                Ok(architecture) => architecture,
                Err(problems) => return Err(Error::Validation(problems)),
            };
        let mut tx = self.db.begin().await?;
        lock_draft(&mut tx, &version.id, model, number).await?;
        let rows = sqlx::query("SELECT path, sha256, size FROM version_files WHERE version_id = $1 ORDER BY path")
            .bind(&version.id)
            .fetch_all(&mut *tx)
            .await?;
        let files = rows.iter().map(file_from_row).collect::<Result<Vec<_>>>()?;
        if files != version.files {
            return Err(Error::Conflict("files changed while the version was being validated; commit again".into()));
        }
        let now = now_ms();
        sqlx::query("UPDATE model_versions SET status = 'ready', architecture = $1, committed_at = $2 WHERE id = $3")
            .bind(&architecture)
            .bind(now)
            .bind(&version.id)
            .execute(&mut *tx)
            .await?;
        let committed = Version {
            status: VersionStatus::Ready,
            architecture: Some(architecture),
            committed_at: Some(now),
            ..version.clone()
        };
        let target = format!("model/{}/version/{number}", model.name);
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: "version.commit",
            target,
            before: serde_json::to_value(&version).ok(),
            after: serde_json::to_value(&committed).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        self.announce(&mut tx, model).await?;
        tx.commit().await?;
        self.announced(model);
        Ok(committed)
    }

    /// Archives a version: kept for audit, no longer callable. Refused while an alias points at it.
    pub async fn archive_version(&self, actor: &Actor, model: &Model, number: i64) -> Result<Version> {
        let version = self.version(model, number).await?;
        let mut tx = self.db.begin().await?;
        let now = now_ms();
        let archived = sqlx::query(
            "UPDATE model_versions SET status = 'archived', archived_at = $1 WHERE id = $2 AND status <> 'archived'",
        )
        .bind(now)
        .bind(&version.id)
        .execute(&mut *tx)
        .await?;
        if archived.rows_affected() == 0 {
            return Err(Error::Conflict(format!("version {}@{number} is already archived", model.name)));
        }
        let pointing = sqlx::query("SELECT name FROM aliases WHERE version_id = $1 ORDER BY name")
            .bind(&version.id)
            .fetch_all(&mut *tx)
            .await?;
        if let Some(row) = pointing.first() {
            let alias: String = row.try_get("name")?;
            return Err(Error::Conflict(format!(
                "alias {}:{alias} points at version {number}; move or delete it before archiving",
                model.name
            )));
        }
        let after = Version { status: VersionStatus::Archived, archived_at: Some(now), ..version.clone() };
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: "version.archive",
            target: format!("model/{}/version/{number}", model.name),
            before: serde_json::to_value(&version).ok(),
            after: serde_json::to_value(&after).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        self.announce(&mut tx, model).await?;
        tx.commit().await?;
        self.announced(model);
        Ok(after)
    }

    pub(crate) async fn version_by_id(&self, model: &Model, id: &str) -> Result<Version> {
        let sql = format!("SELECT {COLUMNS} FROM model_versions WHERE model_id = $1 AND id = $2");
        let mut version = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&model.id)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found("version", id))?;
        version.files = self.version_files(&version.id).await?;
        Ok(version)
    }

    /// One file of a version, as recorded.
    pub async fn version_file(&self, model: &Model, number: i64, path: &FilePath) -> Result<VersionFile> {
        let version = self.version(model, number).await?;
        if version.status == VersionStatus::Failed {
            return Err(Error::not_found("file", format!("{}@{number}/{path} (the version failed)", model.name)));
        }
        version
            .files
            .into_iter()
            .find(|f| f.path == *path)
            .ok_or_else(|| Error::not_found("file", format!("{}@{number}/{path}", model.name)))
    }

    /// The content of a file of the model's tenant, whole or one byte range of it.
    pub async fn read_file(
        &self,
        model: &Model,
        file: &VersionFile,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<object_store::GetResult> {
        match range {
            Some(range) => self.storage.get_blob_range(&model.tenant_id, &file.digest, range).await,
            None => self.storage.get_blob(&model.tenant_id, &file.digest).await,
        }
    }
}

pub(crate) fn ensure_draft(version: &Version, model: &Model) -> Result<()> {
    match version.status {
        VersionStatus::Draft => Ok(()),
        VersionStatus::Archived => {
            Err(Error::Conflict(format!("version {}@{} is archived", model.name, version.number)))
        }
        VersionStatus::Failed => Err(Error::Conflict(format!(
            "version {}@{} was abandoned as a draft and has failed; start a new version",
            model.name, version.number
        ))),
        VersionStatus::Ready => Err(Error::Conflict(format!(
            "version {}@{} is committed and immutable; create a new version",
            model.name, version.number
        ))),
    }
}

/// Takes the version row's write lock inside `tx`, and fails unless it is still a draft.
pub(crate) async fn lock_draft(
    tx: &mut sqlx::AnyConnection,
    version_id: &str,
    model: &Model,
    number: i64,
) -> Result<()> {
    let locked = sqlx::query("UPDATE model_versions SET status = status WHERE id = $1 AND status = 'draft'")
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
    if locked.rows_affected() == 0 {
        return Err(Error::Conflict(format!(
            "version {}@{number} is committed and immutable; create a new version",
            model.name
        )));
    }
    Ok(())
}
