//! Tokens from external identity providers (OIDC issuers listed in config). Each issuer's
//! JWKS is fetched over HTTP and cached; a token whose `kid` the cached set lacks triggers
//! one refetch, at most once per `jwks_refresh_secs` per issuer, so a flood of made-up kids
//! cannot turn into a flood of fetches. The tenant and the role come from claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use registry::keys::KeyRole;
use registry::names::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::{ApiError, ErrorCode};
use crate::tokens::{LEEWAY_SECS, invalid_token, rejected};

/// One external issuer whose tokens are accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuer {
    /// A short name for audit entries: an external principal acts as `oidc:{name}:{sub}`.
    pub name: String,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// Where its public keys are (`…/.well-known/jwks.json`).
    pub jwks_url: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// The claim that names the tenant (its slug).
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// The claim that gives the role: a string or an array of strings; with `role_map` empty
    /// the values are role names (`admin`, `developer`, `invoker`, `viewer`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim value -> role (`"ml-platform-admins" = "admin"`); values not listed are ignored.
    /// The highest role any value maps to wins.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
}

fn default_tenant_claim() -> String {
    "tenant".into()
}

fn default_role_claim() -> String {
    "role".into()
}

/// Who an external token says the caller is.
pub struct External {
    /// `oidc:{issuer name}:{sub}`.
    pub actor: String,
    pub tenant: String,
    pub role: KeyRole,
}

pub struct Oidc {
    issuers: Vec<OidcIssuer>,
    http: reqwest::Client,
    refresh_every: Duration,
    /// Per issuer: the key set, and when it was fetched.
    sets: Mutex<HashMap<String, (Arc<JwkSet>, Instant)>>,
}

impl Oidc {
    pub fn new(issuers: Vec<OidcIssuer>, refresh_every: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Self { issuers, http, refresh_every, sets: Mutex::new(HashMap::new()) }
    }

    /// Verifies a token of a configured issuer; 401 for any defect, saying which.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<External, ApiError> {
        let iss = unverified_issuer(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| invalid_token("the token's key (kid) is unknown and its issuer is not configured"))?;
        let kid = header.kid.as_deref().ok_or_else(|| invalid_token("the token names no key (kid)"))?;
        let (key, algorithm) = self.key(issuer, kid).await?;
        if header.alg != algorithm {
            return Err(invalid_token(format!("algorithm {:?} does not match the issuer's key", header.alg)));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&[&issuer.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(rejected)?.claims;
        let sub = claims["sub"].as_str().unwrap_or_default();
        let tenant = claims[&issuer.tenant_claim].as_str().ok_or_else(|| {
            invalid_token(format!("the token lacks the {:?} claim naming the tenant", issuer.tenant_claim))
        })?;
        let role = role_of(issuer, &claims[&issuer.role_claim])
            .ok_or_else(|| invalid_token(format!("the token's {:?} claim gives no known role", issuer.role_claim)))?;
        Ok(External { actor: format!("oidc:{}:{sub}", issuer.name), tenant: tenant.to_owned(), role })
    }

    /// The issuer's key `kid` and its algorithm, refetching the key set (rate-limited) when
    /// the cached one lacks it.
    async fn key(&self, issuer: &OidcIssuer, kid: &str) -> Result<(DecodingKey, Algorithm), ApiError> {
        let mut sets = self.sets.lock().await;
        let stale = sets
            .get(&issuer.issuer)
            .is_none_or(|(set, fetched)| set.find(kid).is_none() && fetched.elapsed() >= self.refresh_every);
        if stale {
            match self.fetch(issuer).await {
                Ok(set) => {
                    sets.insert(issuer.issuer.clone(), (Arc::new(set), Instant::now()));
                }
                Err(e) => {
                    tracing::warn!(oidc.issuer = %issuer.issuer, error = %e, "fetching the issuer's JWKS failed");
                    if !sets.contains_key(&issuer.issuer) {
                        return Err(ApiError::unavailable(
                            ErrorCode::IdentityProviderUnavailable,
                            format!("the keys of issuer {} could not be fetched; try again", issuer.issuer),
                        ));
                    }
                }
            }
        }
        let set = sets.get(&issuer.issuer).map(|(set, _)| set.clone());
        drop(sets);
        let jwk = set
            .as_ref()
            .and_then(|set| set.find(kid))
            .ok_or_else(|| invalid_token("the token's key (kid) is not in its issuer's key set"))?;
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(alg), _) => algorithm_of(*alg),
            (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
            (None, AlgorithmParameters::EllipticCurve(_)) => Some(Algorithm::ES256),
            (None, AlgorithmParameters::OctetKeyPair(_)) => Some(Algorithm::EdDSA),
            (None, _) => None,
        }
        .ok_or_else(|| invalid_token("the issuer's key is not an asymmetric signing key"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid_token("the issuer's key cannot be used"))?;
        Ok((key, algorithm))
    }

    async fn fetch(&self, issuer: &OidcIssuer) -> Result<JwkSet, reqwest::Error> {
        tracing::info!(oidc.issuer = %issuer.issuer, "fetching the issuer's JWKS");
        self.http.get(&issuer.jwks_url).send().await?.error_for_status()?.json().await
    }
}

/// Asymmetric signature algorithms only: a symmetric one would let anyone holding the public
/// key mint tokens.
fn algorithm_of(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn role_of(issuer: &OidcIssuer, claim: &Value) -> Option<KeyRole> {
    let values: Vec<&str> = match claim {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let roles: Vec<KeyRole> = values
        .into_iter()
        .filter_map(|v| if issuer.role_map.is_empty() { Some(v) } else { issuer.role_map.get(v).map(String::as_str) })
        .filter_map(|name| match name {
            "platform_admin" => Some(KeyRole::PlatformAdmin),
            name => Role::parse(name).ok().map(KeyRole::Tenant),
        })
        .collect();
    if roles.contains(&KeyRole::PlatformAdmin) {
        return Some(KeyRole::PlatformAdmin);
    }
    roles.into_iter().filter_map(|r| if let KeyRole::Tenant(r) = r { Some(r) } else { None }).max().map(KeyRole::Tenant)
}

/// The `iss` claim read before verification, only to pick the issuer whose key verifies it.
fn unverified_issuer(token: &str) -> Result<String, ApiError> {
    let malformed = || invalid_token("the token is not a well-formed JWT");
    let payload = token.split('.').nth(1).ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    claims["iss"].as_str().map(str::to_owned).ok_or_else(|| invalid_token("the token names no issuer (iss)"))
}
