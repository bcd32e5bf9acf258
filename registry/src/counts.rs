//! How much the registry holds, for the dashboard's overview.

use serde::Serialize;
use sqlx::Row as _;

use crate::{Registry, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub tenants: i64,
    pub models: i64,
    /// Versions that are ready (callable).
    pub ready_versions: i64,
    pub versions: i64,
}

impl Registry {
    /// Tenants, models and versions of one tenant (every tenant's with None).
    pub async fn counts(&self, tenant_id: Option<&str>) -> Result<Counts> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM tenants WHERE $1 = '' OR id = $1) AS tenants,
               (SELECT COUNT(*) FROM models WHERE $1 = '' OR tenant_id = $1) AS models,
               (SELECT COUNT(*) FROM model_versions v JOIN models m ON m.id = v.model_id
                 WHERE ($1 = '' OR m.tenant_id = $1) AND v.status = 'ready') AS ready_versions,
               (SELECT COUNT(*) FROM model_versions v JOIN models m ON m.id = v.model_id
                 WHERE $1 = '' OR m.tenant_id = $1) AS versions",
        )
        .bind(tenant_id.unwrap_or(""))
        .fetch_one(self.db.pool())
        .await?;
        Ok(Counts {
            tenants: row.try_get("tenants")?,
            models: row.try_get("models")?,
            ready_versions: row.try_get("ready_versions")?,
            versions: row.try_get("versions")?,
        })
    }
}
