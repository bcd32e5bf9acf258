//! API keys: `mg_<id>_<secret>`. The id finds the row without a scan; only the sha256
//! of the whole key is stored, so the database never holds a usable secret.

use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use crate::audit::{self, Entry};
use crate::db::now_ms;
use crate::limits::Limits;
use crate::names::Role;
use crate::page::{Page, PageRequest};
use crate::{Actor, Error, Registry, Result};

pub const KEY_PREFIX: &str = "mg_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 40;
/// `last_used_at` is refreshed at most this often, to keep writes off the hot path.
pub const LAST_USED_GRANULARITY_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    PlatformAdmin,
    #[serde(untagged)]
    Tenant(Role),
}

impl KeyRole {
    fn as_str(self) -> &'static str {
        match self {
            KeyRole::PlatformAdmin => "platform_admin",
            KeyRole::Tenant(role) => role.as_str(),
        }
    }

    fn parse(s: &str) -> Result<Self> {
        if s == "platform_admin" { Ok(KeyRole::PlatformAdmin) } else { Role::parse(s).map(KeyRole::Tenant) }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    /// `mg_<id>`: what a leaked key starts with, safe to show.
    pub prefix: String,
    #[serde(skip)]
    pub tenant_id: Option<String>,
    pub name: String,
    /// `platform_admin`, or a role in the key's tenant.
    #[schema(value_type = String, example = "developer")]
    pub role: KeyRole,
    pub created_by: String,
    #[serde(serialize_with = "crate::db::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(serialize_with = "crate::db::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<i64>,
    #[serde(serialize_with = "crate::db::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
    #[serde(serialize_with = "crate::db::rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<i64>,
    pub limits: Limits,
}

impl ApiKey {
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| t > now_ms)
    }
}

const COLUMNS: &str = "id, tenant_id, name, role, created_by, created_at, expires_at, revoked_at, last_used_at, \
                       requests_per_minute, concurrent_requests, tokens_per_minute";

fn from_row(r: &AnyRow) -> Result<ApiKey> {
    let id: String = r.try_get("id")?;
    Ok(ApiKey {
        prefix: format!("{KEY_PREFIX}{id}"),
        id,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        role: KeyRole::parse(&r.try_get::<String, _>("role")?)?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
        limits: Limits::from_row(r)?,
    })
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn random_string(len: usize, lowercase: bool) -> String {
    let s: String = rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect();
    if lowercase { s.to_ascii_lowercase() } else { s }
}

/// A key of the tenant, read inside `tx`; another tenant's is "not found".
async fn tenant_key(tx: &mut sqlx::AnyConnection, tenant_id: &str, id: &str) -> Result<ApiKey> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| Error::not_found("key", id))
}

/// Splits `mg_<id>_<secret>` into the id, or None if it is not shaped like a key.
pub fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let shaped = id.len() == ID_LEN
        && secret.len() == SECRET_LEN
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    shaped.then_some(id)
}

/// Whether a presented key is the one whose secret hashes to `secret_sha256` (in constant time).
pub fn secret_matches(presented: &str, secret_sha256: &str) -> bool {
    constant_time_eq(secret_sha256.as_bytes(), hash(presented).as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn validate_key_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::Invalid("key name must be 1-100 printable characters".into()));
    }
    Ok(name.to_owned())
}

impl Registry {
    /// Creates a key and returns it with its secret, which is never retrievable again.
    pub async fn create_key(
        &self,
        actor: &Actor,
        tenant_id: Option<&str>,
        name: &str,
        role: KeyRole,
        expires_at: Option<i64>,
        limits: Limits,
    ) -> Result<(ApiKey, String)> {
        let name = validate_key_name(name)?;
        limits.check()?;
        if expires_at.is_some_and(|t| t > crate::db::LATEST_MS) {
            return Err(Error::Invalid("a key's expiry must be before the year 10000".into()));
        }
        if tenant_id.is_none() != (role == KeyRole::PlatformAdmin) {
            return Err(Error::Invalid(
                "platform admin keys belong to no tenant; tenant keys need a tenant role".into(),
            ));
        }
        let id = random_string(ID_LEN, true);
        let secret = format!("{KEY_PREFIX}{id}_{}", random_string(SECRET_LEN, false));
        let key = ApiKey {
            prefix: format!("{KEY_PREFIX}{id}"),
            id,
            tenant_id: tenant_id.map(str::to_owned),
            name,
            role,
            created_by: actor.key_id.clone(),
            created_at: now_ms(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
            limits,
        };
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, secret_sha256, created_by, created_at, expires_at,
             requests_per_minute, concurrent_requests, tokens_per_minute)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&key.id)
        .bind(key.tenant_id.as_deref())
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(hash(&secret))
        .bind(&key.created_by)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(limits.requests_per_minute)
        .bind(limits.concurrent_requests)
        .bind(limits.tokens_per_minute)
        .execute(&mut *tx)
        .await?;
        let after = serde_json::to_value(&key).ok();
        audit::record(
            &mut tx,
            actor,
            Entry { tenant_id, action: "key.create", target: format!("key/{}", key.id), before: None, after },
        )
        .await?;
        tx.commit().await?;
        Ok((key, secret))
    }

    /// One page of the tenant's keys, oldest first (new keys land on the last page).
    pub async fn list_keys(&self, tenant_id: &str, page: &PageRequest) -> Result<Page<ApiKey>> {
        let (at, id) = match page.after.as_deref().and_then(|k| k.split_once('/')) {
            Some((at, id)) => (at.parse::<i64>().map_err(|_| crate::page::bad_cursor())?, id),
            None => (-1, ""),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys WHERE tenant_id = $1 AND (created_at > $2 OR (created_at = $2 AND id > $3))
             ORDER BY created_at, id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(at)
            .bind(id)
            .bind(page.fetch())
            .fetch_all(self.db.pool())
            .await?;
        let keys = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::new(keys, page, |k| format!("{}/{}", k.created_at, k.id)))
    }

    /// The keys of `ids` that exist, in one query (at most 1,000 ids).
    pub async fn keys_by_ids(&self, ids: &[&str]) -> Result<Vec<ApiKey>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if ids.len() > 1000 {
            return Err(Error::Invalid(format!("at most 1000 keys at once; asked for {}", ids.len())));
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id IN ({})", placeholders.join(", "));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        query.fetch_all(self.db.pool()).await?.iter().map(from_row).collect()
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Sets the limits of a key of the tenant (None lifts one). A key of another tenant is "not found".
    pub async fn set_key_limits(&self, actor: &Actor, tenant_id: &str, id: &str, limits: Limits) -> Result<ApiKey> {
        limits.check()?;
        let mut tx = self.db.begin().await?;
        let before = tenant_key(&mut tx, tenant_id, id).await?;
        sqlx::query(
            "UPDATE api_keys SET requests_per_minute = $1, concurrent_requests = $2, tokens_per_minute = $3 WHERE id = $4",
        )
        .bind(limits.requests_per_minute)
        .bind(limits.concurrent_requests)
        .bind(limits.tokens_per_minute)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let after = ApiKey { limits, ..before.clone() };
        let entry = Entry {
            tenant_id: Some(tenant_id),
            action: "key.limits.set",
            target: format!("key/{id}"),
            before: serde_json::to_value(&before).ok(),
            after: serde_json::to_value(&after).ok(),
        };
        audit::record(&mut tx, actor, entry).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Revokes a key of the tenant. A key of another tenant is "not found".
    pub async fn revoke_key(&self, actor: &Actor, tenant_id: &str, id: &str) -> Result<ApiKey> {
        let mut tx = self.db.begin().await?;
        let before = tenant_key(&mut tx, tenant_id, id).await?;
        let now = now_ms();
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let after = ApiKey { revoked_at: before.revoked_at.or(Some(now)), ..before.clone() };
        audit::record(
            &mut tx,
            actor,
            Entry {
                tenant_id: Some(tenant_id),
                action: "key.revoke",
                target: format!("key/{id}"),
                before: serde_json::to_value(&before).ok(),
                after: serde_json::to_value(&after).ok(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// A key with the sha256 of its secret, for callers that check presented secrets
    /// themselves (the gateway caches keys for a moment).
    pub async fn key_with_secret_hash(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        let sql = format!("SELECT {COLUMNS}, secret_sha256 FROM api_keys WHERE id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.db.pool()).await? else {
            return Ok(None);
        };
        Ok(Some((from_row(&row)?, row.try_get("secret_sha256")?)))
    }

    /// Records that the key was used now, if its `last_used_at` is older than a minute (so the
    /// hot path rarely writes); answers whether it wrote.
    pub async fn note_key_used(&self, id: &str, now: i64) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - LAST_USED_GRANULARITY_MS)
        .execute(self.db.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    pub async fn active_platform_admin_exists(&self) -> Result<bool> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM api_keys WHERE role = 'platform_admin' AND revoked_at IS NULL")
                .fetch_one(self.db.pool())
                .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_shaped_keys_yield_an_id() {
        let id = "abcdefgh1234";
        let secret = "A".repeat(SECRET_LEN);
        assert_eq!(key_id(&format!("mg_{id}_{secret}")), Some(id));
        assert_eq!(key_id(&format!("mx_{id}_{secret}")), None);
        assert_eq!(key_id(&format!("mg_{id}_{}", &secret[1..])), None);
        assert_eq!(key_id(&format!("mg_ABCDEFGH1234_{secret}")), None);
        assert_eq!(key_id("mg_"), None);
    }
}
