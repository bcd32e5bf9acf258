//! Aliases (`production`, `staging`, …) point at a ready version, and model references
//! (`name`, `name:alias`, `name@N`) resolve through them.

use serde::Serialize;
use sqlx::Row as _;

use crate::audit::{self, Entry};
use crate::db::now_ms;
use crate::models::Model;
use crate::names::{AliasName, ModelName};
use crate::versions::{Version, VersionStatus};
use crate::{Actor, Error, Registry, Result};

#[derive(Debug, Clone, Serialize)]
pub struct Alias {
    pub name: AliasName,
    pub version: i64,
    pub updated_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    pub updated_at: i64,
}

/// How a caller names a model in an inference request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// `minilm`: the newest ready version.
    Latest(ModelName),
    /// `minilm:production`
    Alias(ModelName, AliasName),
    /// `minilm@3`
    Version(ModelName, i64),
}

impl ModelRef {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some((name, alias)) = s.split_once(':') {
            return Ok(ModelRef::Alias(ModelName::parse(name)?, AliasName::parse(alias)?));
        }
        if let Some((name, number)) = s.split_once('@') {
            let number = number.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Error::Invalid(format!("invalid version {number:?}: use a positive integer, as in {name}@1"))
            })?;
            return Ok(ModelRef::Version(ModelName::parse(name)?, number));
        }
        Ok(ModelRef::Latest(ModelName::parse(s)?))
    }

    pub fn model_name(&self) -> &ModelName {
        match self {
            ModelRef::Latest(n) | ModelRef::Alias(n, _) | ModelRef::Version(n, _) => n,
        }
    }
}

impl Registry {
    /// Points `alias` at a ready version of the model, atomically, and records the move.
    pub async fn set_alias(&self, actor: &Actor, model: &Model, alias: &AliasName, number: i64) -> Result<Alias> {
        let version = self.version(model, number).await?;
        if version.status != VersionStatus::Ready {
            return Err(Error::Conflict(format!(
                "version {}@{number} is not ready; commit it before pointing an alias at it",
                model.name
            )));
        }
        let before = self.aliases(model).await?.into_iter().find(|a| a.name == *alias);
        let after =
            Alias { name: alias.clone(), version: number, updated_by: actor.key_id.clone(), updated_at: now_ms() };
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            "INSERT INTO aliases (model_id, name, version_id, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (model_id, name) DO UPDATE SET version_id = excluded.version_id,
             updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        )
        .bind(&model.id)
        .bind(alias.as_str())
        .bind(&version.id)
        .bind(&after.updated_by)
        .bind(after.updated_at)
        .execute(&mut *tx)
        .await?;
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: "alias.set",
            target: format!("model/{}/alias/{alias}", model.name),
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: serde_json::to_value(&after).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        Ok(after)
    }

    pub async fn aliases(&self, model: &Model) -> Result<Vec<Alias>> {
        let rows = sqlx::query(
            "SELECT a.name, v.number, a.updated_by, a.updated_at FROM aliases a
             JOIN model_versions v ON v.id = a.version_id WHERE a.model_id = $1 ORDER BY a.name",
        )
        .bind(&model.id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Alias {
                    name: AliasName::parse(&r.try_get::<String, _>("name")?)?,
                    version: r.try_get("number")?,
                    updated_by: r.try_get("updated_by")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Resolves a reference to a ready version in the tenant; anything else is "not found".
    pub async fn resolve(&self, tenant_id: &str, reference: &ModelRef) -> Result<(Model, Version)> {
        let model = self.model(tenant_id, reference.model_name()).await?;
        let number = match reference {
            ModelRef::Version(_, n) => *n,
            ModelRef::Alias(name, alias) => {
                let row = sqlx::query(
                    "SELECT v.number FROM aliases a JOIN model_versions v ON v.id = a.version_id WHERE a.model_id = $1 AND a.name = $2",
                )
                .bind(&model.id)
                .bind(alias.as_str())
                .fetch_optional(self.db.pool())
                .await?
                .ok_or_else(|| Error::not_found("alias", format!("{name}:{alias}")))?;
                row.try_get("number")?
            }
            ModelRef::Latest(name) => {
                let row =
                    sqlx::query("SELECT MAX(number) AS n FROM model_versions WHERE model_id = $1 AND status = 'ready'")
                        .bind(&model.id)
                        .fetch_one(self.db.pool())
                        .await?;
                row.try_get::<Option<i64>, _>("n")?.ok_or_else(|| Error::not_found("ready version of model", name))?
            }
        };
        let version = self.version(&model, number).await?;
        if version.status != VersionStatus::Ready {
            return Err(Error::not_found("ready version", format!("{}@{number}", model.name)));
        }
        Ok((model, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_references_parse_in_three_forms() {
        let name = |s: &str| ModelName::parse(s).ok();
        assert_eq!(ModelRef::parse("minilm").ok(), name("minilm").map(ModelRef::Latest));
        assert_eq!(ModelRef::parse("minilm@3").ok(), name("minilm").map(|n| ModelRef::Version(n, 3)));
        let alias = AliasName::parse("production").ok();
        assert_eq!(
            ModelRef::parse("minilm:production").ok(),
            name("minilm").zip(alias).map(|(n, a)| ModelRef::Alias(n, a))
        );
        assert!(ModelRef::parse("minilm@0").is_err());
        assert!(ModelRef::parse("minilm@x").is_err());
        assert!(ModelRef::parse("minilm:").is_err());
        assert!(ModelRef::parse("").is_err());
    }
}
