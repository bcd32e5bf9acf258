//! Aliases (`production`, `staging`, …) point at a ready version, and model references
//! (`name`, `name:alias`, `name@N`) resolve through them.

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::audit::{self, Entry};
use crate::db::now_ms;
use crate::models::Model;
use crate::names::{AliasName, ModelRef};
use crate::versions::{Version, VersionStatus};
use crate::{Actor, Error, Registry, Result};

/// One version an alias points at, with its share of the traffic in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    pub version: i64,
    pub weight: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Alias {
    pub name: AliasName,
    /// The version, when the alias points at exactly one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Every version it points at with its weight; the weights sum to 100.
    pub targets: Vec<AliasTarget>,
    pub updated_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// One move of an alias: from which targets to which (none: created or deleted).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AliasMove {
    pub from: Option<Vec<AliasTarget>>,
    pub to: Option<Vec<AliasTarget>>,
    pub moved_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub moved_at: i64,
}

/// At most this many versions share one alias.
const MAX_TARGETS: usize = 10;

fn check_targets(targets: &[AliasTarget]) -> Result<()> {
    if targets.is_empty() || targets.len() > MAX_TARGETS {
        return Err(Error::Invalid(format!("an alias points at 1 to {MAX_TARGETS} versions; got {}", targets.len())));
    }
    if let Some(t) = targets.iter().find(|t| !(1..=100).contains(&t.weight)) {
        return Err(Error::Invalid(format!("weight {} of version {} is not between 1 and 100", t.weight, t.version)));
    }
    let sum: i64 = targets.iter().map(|t| t.weight).sum();
    if sum != 100 {
        return Err(Error::Invalid(format!("alias weights must sum to 100; these sum to {sum}")));
    }
    let mut versions: Vec<i64> = targets.iter().map(|t| t.version).collect();
    versions.sort_unstable();
    versions.dedup();
    if versions.len() != targets.len() {
        return Err(Error::Invalid("each version may appear once among an alias's targets".into()));
    }
    Ok(())
}

impl Registry {
    /// Points `alias` at one ready version, or splits it over several by weight; atomic and
    /// recorded in the alias's history and the audit log.
    pub async fn set_alias(
        &self,
        actor: &Actor,
        model: &Model,
        alias: &AliasName,
        targets: &[AliasTarget],
    ) -> Result<Alias> {
        check_targets(targets)?;
        let mut ids = Vec::with_capacity(targets.len());
        for t in targets {
            ids.push(self.version(model, t.version).await?.id);
        }
        let before = self.alias(model, alias).await.ok();
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        for (t, id) in targets.iter().zip(&ids) {
            // Locks each version row: an archive running at the same time waits, then sees the alias.
            let ready = sqlx::query("UPDATE model_versions SET status = status WHERE id = $1 AND status = 'ready'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if ready.rows_affected() == 0 {
                return Err(Error::Conflict(format!(
                    "version {}@{} is not ready (a draft or archived); aliases point at ready versions only",
                    model.name, t.version
                )));
            }
        }
        sqlx::query("DELETE FROM aliases WHERE model_id = $1 AND name = $2")
            .bind(&model.id)
            .bind(alias.as_str())
            .execute(&mut *tx)
            .await?;
        for (t, id) in targets.iter().zip(&ids) {
            sqlx::query(
                "INSERT INTO aliases (model_id, name, version_id, weight, updated_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&model.id)
            .bind(alias.as_str())
            .bind(id)
            .bind(t.weight)
            .bind(&actor.key_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let after = Alias {
            name: alias.clone(),
            version: (targets.len() == 1).then(|| targets[0].version),
            targets: targets.to_vec(),
            updated_by: actor.key_id.clone(),
            updated_at: now,
        };
        self.record_move(&mut tx, actor, model, alias, before.as_ref(), Some(&after)).await?;
        tx.commit().await?;
        self.announced(model);
        Ok(after)
    }

    pub async fn delete_alias(&self, actor: &Actor, model: &Model, alias: &AliasName) -> Result<()> {
        let before = self.alias(model, alias).await?;
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM aliases WHERE model_id = $1 AND name = $2")
            .bind(&model.id)
            .bind(alias.as_str())
            .execute(&mut *tx)
            .await?;
        self.record_move(&mut tx, actor, model, alias, Some(&before), None).await?;
        tx.commit().await?;
        self.announced(model);
        Ok(())
    }

    async fn record_move(
        &self,
        tx: &mut sqlx::AnyConnection,
        actor: &Actor,
        model: &Model,
        alias: &AliasName,
        before: Option<&Alias>,
        after: Option<&Alias>,
    ) -> Result<()> {
        let targets = |a: Option<&Alias>| a.and_then(|a| serde_json::to_string(&a.targets).ok());
        sqlx::query(
            "INSERT INTO alias_history (id, model_id, name, from_json, to_json, moved_by, moved_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(crate::db::new_id())
        .bind(&model.id)
        .bind(alias.as_str())
        .bind(targets(before))
        .bind(targets(after))
        .bind(&actor.key_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        self.announce(tx, model).await?;
        let entry = Entry {
            tenant_id: Some(&model.tenant_id),
            action: if after.is_some() { "alias.set" } else { "alias.delete" },
            target: format!("model/{}/alias/{alias}", model.name),
            before: before.and_then(|b| serde_json::to_value(b).ok()),
            after: after.and_then(|a| serde_json::to_value(a).ok()),
        };
        audit::record(tx, actor, entry).await
    }

    /// Every alias of the model with its targets.
    pub async fn aliases(&self, model: &Model) -> Result<Vec<Alias>> {
        let rows = sqlx::query(
            "SELECT a.name, v.number, a.weight, a.updated_by, a.updated_at FROM aliases a
             JOIN model_versions v ON v.id = a.version_id WHERE a.model_id = $1 ORDER BY a.name, v.number",
        )
        .bind(&model.id)
        .fetch_all(self.db.pool())
        .await?;
        let mut aliases: Vec<Alias> = Vec::new();
        for r in &rows {
            let name = AliasName::parse(&r.try_get::<String, _>("name")?)?;
            let target = AliasTarget { version: r.try_get("number")?, weight: r.try_get("weight")? };
            match aliases.last_mut() {
                Some(alias) if alias.name == name => alias.targets.push(target),
                _ => aliases.push(Alias {
                    name,
                    version: None,
                    targets: vec![target],
                    updated_by: r.try_get("updated_by")?,
                    updated_at: r.try_get("updated_at")?,
                }),
            }
        }
        for alias in &mut aliases {
            alias.version = (alias.targets.len() == 1).then(|| alias.targets[0].version);
        }
        Ok(aliases)
    }

    pub async fn alias(&self, model: &Model, alias: &AliasName) -> Result<Alias> {
        self.aliases(model)
            .await?
            .into_iter()
            .find(|a| a.name == *alias)
            .ok_or_else(|| Error::not_found("alias", format!("{}:{alias}", model.name)))
    }

    /// Every move of the alias, newest first.
    pub async fn alias_history(&self, model: &Model, alias: &AliasName) -> Result<Vec<AliasMove>> {
        let rows = sqlx::query(
            "SELECT from_json, to_json, moved_by, moved_at FROM alias_history WHERE model_id = $1 AND name = $2 ORDER BY id DESC",
        )
        .bind(&model.id)
        .bind(alias.as_str())
        .fetch_all(self.db.pool())
        .await?;
        if rows.is_empty() {
            return Err(Error::not_found("alias", format!("{}:{alias}", model.name)));
        }
        let targets = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        rows.iter()
            .map(|r| {
                Ok(AliasMove {
                    from: targets(r.try_get("from_json")?),
                    to: targets(r.try_get("to_json")?),
                    moved_by: r.try_get("moved_by")?,
                    moved_at: r.try_get("moved_at")?,
                })
            })
            .collect()
    }

    /// A ready version named the way Git-style clients name revisions: `main` (the newest),
    /// a version number, a version's commit id, or an alias (its largest share, for a split).
    pub async fn resolve_revision(&self, model: &Model, revision: &str) -> Result<Version> {
        let not_found = || Error::not_found("revision", format!("{}@{revision}", model.name));
        let number = if revision == "main" {
            let (_, version) = self.resolve(&model.tenant_id, &ModelRef::Latest(model.name.clone())).await?;
            return Ok(version);
        } else if let Ok(number) = revision.parse::<i64>() {
            number
        } else if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut page = crate::page::PageRequest::first(crate::page::MAX_LIMIT);
            loop {
                let batch = self.list_versions(model, Some(VersionStatus::Ready), &page).await?;
                if let Some(v) = batch.data.iter().find(|v| v.commit_id() == revision) {
                    break v.number;
                }
                match (batch.next_cursor, batch.data.last()) {
                    (Some(_), Some(last)) => page.after = Some(last.number.to_string()),
                    _ => return Err(not_found()),
                }
            }
        } else {
            let alias = AliasName::parse(revision).map_err(|_| not_found())?;
            let alias = self.alias(model, &alias).await.map_err(|_| not_found())?;
            let top =
                alias.targets.iter().max_by_key(|t| (t.weight, std::cmp::Reverse(t.version))).ok_or_else(not_found)?;
            top.version
        };
        let version = self.version(model, number).await.map_err(|_| not_found())?;
        if version.status != VersionStatus::Ready {
            return Err(not_found());
        }
        Ok(version)
    }

    /// Resolves a reference to a ready version in the tenant; anything else is "not found".
    /// An alias split over several versions picks one by weight.
    pub async fn resolve(&self, tenant_id: &str, reference: &ModelRef) -> Result<(Model, Version)> {
        let (model, targets) = self.resolve_targets(tenant_id, reference).await?;
        let version = pick_version(&targets, rand::random_range(0..100))
            .ok_or_else(|| Error::not_found("ready version of model", &model.name))?;
        Ok((model, version.clone()))
    }

    /// Every ready version a reference may resolve to, with its weight (one, weighing 100,
    /// unless it names an alias split over several): what a resolution cache keeps.
    pub async fn resolve_targets(&self, tenant_id: &str, reference: &ModelRef) -> Result<(Model, Vec<(i64, Version)>)> {
        let model = self.model(tenant_id, reference.model_name()).await?;
        let targets = match reference {
            ModelRef::Version(_, n) => vec![AliasTarget { version: *n, weight: 100 }],
            ModelRef::Alias(_, alias) => self.alias(&model, alias).await?.targets,
            ModelRef::Latest(name) => {
                let row =
                    sqlx::query("SELECT MAX(number) AS n FROM model_versions WHERE model_id = $1 AND status = 'ready'")
                        .bind(&model.id)
                        .fetch_one(self.db.pool())
                        .await?;
                let n = row
                    .try_get::<Option<i64>, _>("n")?
                    .ok_or_else(|| Error::not_found("ready version of model", name))?;
                vec![AliasTarget { version: n, weight: 100 }]
            }
        };
        let mut versions = Vec::with_capacity(targets.len());
        for t in targets {
            let version = self.version(&model, t.version).await?;
            if version.status != VersionStatus::Ready {
                return Err(Error::not_found("ready version", format!("{}@{}", model.name, t.version)));
            }
            versions.push((t.weight, version));
        }
        Ok((model, versions))
    }
}

/// Picks one of weighted versions; `roll` is uniform in 0..100.
pub fn pick_version(targets: &[(i64, Version)], roll: i64) -> Option<&Version> {
    let mut acc = 0;
    targets
        .iter()
        .find(|(weight, _)| {
            acc += weight;
            roll < acc
        })
        .or(targets.last())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_targets_must_be_distinct_and_sum_to_100() {
        let t = |version, weight| AliasTarget { version, weight };
        assert!(check_targets(&[t(1, 100)]).is_ok());
        assert!(check_targets(&[t(1, 90), t(2, 10)]).is_ok());
        let err = |targets: &[AliasTarget]| check_targets(targets).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&[t(1, 90), t(2, 20)]).contains("sum to 110"));
        assert!(err(&[t(1, 50), t(1, 50)]).contains("once"));
        assert!(err(&[t(1, 0), t(2, 100)]).contains("between 1 and 100"));
        assert!(err(&[]).contains("1 to 10"));
    }

    #[test]
    fn weighted_picks_follow_the_weights() {
        let version = |number| Version {
            id: String::new(),
            number,
            status: VersionStatus::Ready,
            architecture: None,
            created_by: String::new(),
            created_at: 0,
            committed_at: None,
            archived_at: None,
            description: String::new(),
            tags: Vec::new(),
            derived_from: None,
            files: Vec::new(),
        };
        let targets = [(90, version(1)), (10, version(2))];
        let pick = |targets: &[(i64, Version)], roll| pick_version(targets, roll).map(|v| v.number);
        assert_eq!(pick(&targets, 0), Some(1));
        assert_eq!(pick(&targets, 89), Some(1));
        assert_eq!(pick(&targets, 90), Some(2));
        assert_eq!(pick(&targets, 99), Some(2));
        let twos = (0..100).filter(|roll| pick(&targets, *roll) == Some(2)).count();
        assert_eq!(twos, 10);
    }
}
