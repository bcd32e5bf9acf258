//! Models: named containers of versions inside one tenant.

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::audit::{self, Entry};
use crate::db::{new_id, now_ms};
use crate::names::{AliasName, ModelName, Task};
use crate::page::{Page, PageRequest};
use crate::{Actor, Error, Registry, Result};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Model {
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub name: ModelName,
    pub task: Task,
    pub description: String,
    pub tags: Vec<String>,
    pub created_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

/// A model a caller can name in an inference request: it has a ready version, so `name`
/// resolves, and so does `name:alias` for each of its aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallableModel {
    pub name: ModelName,
    pub created_at: i64,
    /// By name.
    pub aliases: Vec<AliasName>,
}

/// Which models a list returns; unset fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    pub task: Option<Task>,
    pub tag: Option<String>,
    pub name_prefix: Option<String>,
}

/// A change to a model's description and tags; unset fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct ModelPatch {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

const COLUMNS: &str = "id, tenant_id, name, task, description, created_by, created_at";
const MAX_DESCRIPTION_CHARS: usize = 4096;
const MAX_TAGS: usize = 32;

fn from_row(r: &AnyRow) -> Result<Model> {
    Ok(Model {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: ModelName::parse(&r.try_get::<String, _>("name")?)?,
        task: Task::parse(&r.try_get::<String, _>("task")?)?,
        description: r.try_get("description")?,
        tags: Vec::new(),
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::Invalid(format!("description is longer than {MAX_DESCRIPTION_CHARS} characters")));
    }
    Ok(())
}

/// Tags are 1-64 printable characters without spaces; at most 32, duplicates dropped, sorted.
pub fn check_tags(tags: &[String]) -> Result<Vec<String>> {
    if tags.len() > MAX_TAGS {
        return Err(Error::Invalid(format!("at most {MAX_TAGS} tags per model")));
    }
    if let Some(bad) = tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > 64 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(Error::Invalid(format!("invalid tag {bad:?}: use 1-64 characters without spaces")));
    }
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// One model of [`Registry::callable_models`]'s listing: `name:created_at:alias,alias`.
fn callable_from_entry(entry: &str) -> Result<CallableModel> {
    let unreadable = || Error::Invalid(format!("unreadable entry {entry:?} in the callable models' listing"));
    let mut fields = entry.splitn(3, ':');
    let (Some(name), Some(created_at), Some(aliases)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(unreadable());
    };
    let mut aliases = aliases.split(',').filter(|a| !a.is_empty()).map(AliasName::parse).collect::<Result<Vec<_>>>()?;
    // An alias split over several versions has a row per version.
    aliases.dedup();
    Ok(CallableModel {
        name: ModelName::parse(name)?,
        created_at: created_at.parse().map_err(|_| unreadable())?,
        aliases,
    })
}

async fn write_tags(tx: &mut sqlx::AnyConnection, model_id: &str, tags: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM model_tags WHERE model_id = $1").bind(model_id).execute(&mut *tx).await?;
    for tag in tags {
        sqlx::query("INSERT INTO model_tags (model_id, tag) VALUES ($1, $2)")
            .bind(model_id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

impl Registry {
    pub async fn create_model(
        &self,
        actor: &Actor,
        tenant_id: &str,
        name: &ModelName,
        task: Task,
        description: &str,
        tags: &[String],
    ) -> Result<Model> {
        check_description(description)?;
        let model = Model {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            name: name.clone(),
            task,
            description: description.to_owned(),
            tags: check_tags(tags)?,
            created_by: actor.key_id.clone(),
            created_at: now_ms(),
        };
        let mut tx = self.db.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO models (id, tenant_id, name, task, description, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(&model.id)
        .bind(tenant_id)
        .bind(model.name.as_str())
        .bind(task.as_str())
        .bind(&model.description)
        .bind(&model.created_by)
        .bind(model.created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::Conflict(format!("model {:?} already exists", name.as_str())));
        }
        write_tags(&mut tx, &model.id, &model.tags).await?;
        let after = serde_json::to_value(&model).ok();
        let entry = Entry {
            tenant_id: Some(tenant_id),
            action: "model.create",
            target: format!("model/{name}"),
            before: None,
            after,
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        Ok(model)
    }

    /// Changes a model's description and tags.
    pub async fn update_model(&self, actor: &Actor, model: &Model, patch: ModelPatch) -> Result<Model> {
        let mut after = model.clone();
        if let Some(description) = patch.description {
            check_description(&description)?;
            after.description = description;
        }
        if let Some(tags) = patch.tags {
            after.tags = check_tags(&tags)?;
        }
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE models SET description = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(&after.description)
            .bind(&model.id)
            .execute(&mut *tx)
            .await?;
        write_tags(&mut tx, &model.id, &after.tags).await?;
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: "model.update",
            target: format!("model/{}", model.name),
            before: serde_json::to_value(model).ok(),
            after: serde_json::to_value(&after).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// One page of the tenant's models, by name.
    pub async fn list_models(&self, tenant_id: &str, filter: &ModelFilter, page: &PageRequest) -> Result<Page<Model>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM models WHERE tenant_id = $1 AND deleted_at IS NULL AND name > $2
             AND ($3 = '' OR task = $3)
             AND ($4 = '' OR EXISTS (SELECT 1 FROM model_tags t WHERE t.model_id = models.id AND t.tag = $4))
             AND substr(name, 1, length($5)) = $5
             ORDER BY name LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(filter.task.map_or("", Task::as_str))
            .bind(filter.tag.as_deref().unwrap_or(""))
            .bind(filter.name_prefix.as_deref().unwrap_or(""))
            .bind(page.fetch())
            .fetch_all(self.db.pool())
            .await?;
        let mut models = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        self.load_tags(&mut models).await?;
        Ok(Page::new(models, page, |m| m.name.to_string()))
    }

    /// Every model of the tenant with a ready version, by name, with its aliases: what
    /// `GET /v1/models` lists. An alias points at ready versions only, so a model without one
    /// has no alias either.
    ///
    /// The answer is one aggregated row, `name:created_at:alias,alias;name:…`: through sqlx's
    /// `Any` driver every row costs some microseconds, so 10,000 rows took ~40 ms where this
    /// takes ~11 (docs/PERFORMANCE.md). `string_agg(… ORDER BY …)` runs on Postgres and on
    /// SQLite 3.44 or later (sqlx bundles 3.51). No model or alias name holds `:`, `,` or `;`
    /// (names.rs), so the split is exact.
    pub async fn callable_models(&self, tenant_id: &str) -> Result<Vec<CallableModel>> {
        let row = sqlx::query(
            "SELECT string_agg(m.name || ':' || CAST(m.created_at AS TEXT) || ':' || COALESCE(
               (SELECT string_agg(a.name, ',' ORDER BY a.name) FROM aliases a WHERE a.model_id = m.id), ''),
             ';' ORDER BY m.name) AS listing
             FROM models m WHERE m.tenant_id = $1 AND m.deleted_at IS NULL
             AND EXISTS (SELECT 1 FROM model_versions v WHERE v.model_id = m.id AND v.status = 'ready')",
        )
        .bind(tenant_id)
        .fetch_one(self.db.pool())
        .await?;
        let Some(listing) = row.try_get::<Option<String>, _>("listing")? else { return Ok(Vec::new()) };
        listing.split(';').map(callable_from_entry).collect()
    }

    async fn load_tags(&self, models: &mut [Model]) -> Result<()> {
        if models.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=models.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT model_id, tag FROM model_tags WHERE model_id IN ({}) ORDER BY tag",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for model in models.iter() {
            query = query.bind(model.id.clone());
        }
        for row in query.fetch_all(self.db.pool()).await? {
            let model_id: String = row.try_get("model_id")?;
            if let Some(model) = models.iter_mut().find(|m| m.id == model_id) {
                model.tags.push(row.try_get("tag")?);
            }
        }
        Ok(())
    }

    /// A model of the tenant; another tenant's model is "not found", like a missing one.
    pub async fn model(&self, tenant_id: &str, name: &ModelName) -> Result<Model> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL");
        let model = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(name.as_str())
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found("model", name))?;
        let mut models = [model];
        self.load_tags(&mut models).await?;
        let [model] = models;
        Ok(model)
    }

    /// Deletes a model: refused while any alias points into it; its versions are archived
    /// (kept for audit) and its name becomes free. Blobs are left for garbage collection.
    pub async fn delete_model(&self, actor: &Actor, model: &Model) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let now = now_ms();
        // Taking the model row's lock first serialises this with version creation.
        let renamed = sqlx::query(
            "UPDATE models SET deleted_at = $1, name = name || '@deleted-' || id WHERE id = $2 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(&model.id)
        .execute(&mut *tx)
        .await?;
        if renamed.rows_affected() == 0 {
            return Err(Error::not_found("model", &model.name));
        }
        let aliases = sqlx::query("SELECT DISTINCT name FROM aliases WHERE model_id = $1 ORDER BY name")
            .bind(&model.id)
            .fetch_all(&mut *tx)
            .await?;
        if !aliases.is_empty() {
            let names = aliases.iter().map(|r| r.try_get::<String, _>("name")).collect::<Result<Vec<_>, _>>()?;
            return Err(Error::Conflict(format!(
                "model {:?} still has aliases ({}); delete them first",
                model.name.as_str(),
                names.join(", ")
            )));
        }
        sqlx::query("UPDATE model_versions SET status = 'archived', archived_at = $1 WHERE model_id = $2 AND status <> 'archived'")
            .bind(now)
            .bind(&model.id)
            .execute(&mut *tx)
            .await?;
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: "model.delete",
            target: format!("model/{}", model.name),
            before: serde_json::to_value(model).ok(),
            after: None,
        };
        audit::record(&mut tx, actor, entry).await?;
        self.announce(&mut tx, model).await?;
        tx.commit().await?;
        self.announced(model);
        Ok(())
    }
}
