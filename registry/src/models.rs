//! Models: named containers of versions inside one tenant.

use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::audit::{self, Entry};
use crate::db::{new_id, now_ms};
use crate::names::{ModelName, Task};
use crate::{Actor, Error, Registry, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub name: ModelName,
    pub task: Task,
    pub description: String,
    pub created_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    pub created_at: i64,
}

const COLUMNS: &str = "id, tenant_id, name, task, description, created_by, created_at";

fn from_row(r: &AnyRow) -> Result<Model> {
    Ok(Model {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        name: ModelName::parse(&r.try_get::<String, _>("name")?)?,
        task: Task::parse(&r.try_get::<String, _>("task")?)?,
        description: r.try_get("description")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Registry {
    pub async fn create_model(
        &self,
        actor: &Actor,
        tenant_id: &str,
        name: &ModelName,
        task: Task,
        description: &str,
    ) -> Result<Model> {
        if description.chars().count() > 4096 {
            return Err(Error::Invalid("description is longer than 4096 characters".into()));
        }
        let model = Model {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            name: name.clone(),
            task,
            description: description.to_owned(),
            created_by: actor.key_id.clone(),
            created_at: now_ms(),
        };
        let mut tx = self.db.pool().begin().await?;
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
        let after = serde_json::to_value(&model).ok();
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: Some(tenant_id),
                action: "model.create",
                target: format!("model/{name}"),
                before: None,
                after,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(model)
    }

    pub async fn list_models(&self, tenant_id: &str) -> Result<Vec<Model>> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant_id).fetch_all(self.db.pool()).await?;
        rows.iter().map(from_row).collect()
    }

    /// A model of the tenant; another tenant's model is "not found", like a missing one.
    pub async fn model(&self, tenant_id: &str, name: &ModelName) -> Result<Model> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(name.as_str())
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Error::not_found("model", name))
    }

    /// Deletes a model: refused while any alias points into it; its versions are archived
    /// (kept for audit) and its name becomes free. Blobs are left for garbage collection.
    pub async fn delete_model(&self, actor: &Actor, model: &Model) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
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
        tx.commit().await?;
        Ok(())
    }
}
