//! Short-lived JWTs issued in exchange for an API key, signed with Ed25519 (EdDSA).
//!
//! Keys rotate: the current key signs; previous keys (from config) only verify, until the
//! tokens they signed have expired and the operator drops them. `GET /.well-known/jwks.json`
//! publishes every public key. Verification pins the algorithm and checks kid, issuer,
//! audience, expiry and not-before, and says which check failed.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorCode};

pub const ISSUER: &str = "modelgate";
pub const AUDIENCE: &str = "modelgate";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The id of the API key the token was issued for; its state is checked on every use.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Set on dashboard sessions only: the session's id, kept when the session's token is
    /// renewed, and the value its forms must echo (CSRF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The gateway's token keys: one that signs, all that verify.
pub struct TokenIssuer {
    kid: String,
    encoding: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: Value,
    validation: Validation,
    ttl_secs: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid JWT signing key: {0}")]
pub struct KeyError(String);

/// A key's id: the first 8 bytes of the sha256 of its public key, in hex.
fn kid_of(public: &VerifyingKey) -> String {
    hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(public.to_bytes())[..8])
}

/// The public half of a PEM that holds an Ed25519 private (PKCS#8) or public (SPKI) key.
fn public_key(pem: &str) -> Result<VerifyingKey, KeyError> {
    match SigningKey::from_pkcs8_pem(pem) {
        Ok(private) => Ok(private.verifying_key()),
        Err(_) => VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError(e.to_string())),
    }
}

impl TokenIssuer {
    /// A new Ed25519 private key as PKCS#8 PEM.
    pub fn generate_pem() -> Result<SecretString, KeyError> {
        let seed: [u8; 32] = rand::random();
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(SecretString::from(pem.to_string()))
    }

    /// `signing`: the PKCS#8 PEM of the key that signs. `previous`: PEMs (private or public)
    /// of keys that still verify tokens they signed.
    pub fn new(signing: &SecretString, previous: &[String], ttl_secs: i64) -> Result<Self, KeyError> {
        let private = SigningKey::from_pkcs8_pem(signing.expose_secret()).map_err(|e| KeyError(e.to_string()))?;
        let current = private.verifying_key();
        let kid = kid_of(&current);
        let encoding =
            EncodingKey::from_ed_pem(signing.expose_secret().as_bytes()).map_err(|e| KeyError(e.to_string()))?;
        let mut publics = vec![current];
        for pem in previous {
            let key = public_key(pem)?;
            if !publics.contains(&key) {
                publics.push(key);
            }
        }
        let verifying = publics.iter().map(|k| (kid_of(k), DecodingKey::from_ed_der(&k.to_bytes()))).collect();
        let keys: Vec<Value> = publics
            .iter()
            .map(|k| {
                json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": kid_of(k), "x": URL_SAFE_NO_PAD.encode(k.to_bytes()),
                })
            })
            .collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(Self { kid, encoding, verifying, jwks: json!({ "keys": keys }), validation, ttl_secs })
    }

    /// The id of the key that signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys, as a JSON Web Key Set.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// A token for the key `key_id`, and when it expires (seconds since the epoch).
    pub fn issue(&self, key_id: &str) -> Result<(String, i64), ApiError> {
        self.issue_with_session(key_id, None)
    }

    /// How long a token lives.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A token for the key `key_id` that carries a dashboard session's id.
    pub fn issue_with_session(&self, key_id: &str, sid: Option<&str>) -> Result<(String, i64), ApiError> {
        let now = registry::db::now_ms() / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: key_id.into(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            sid: sid.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(ApiError::internal)?;
        Ok((token, claims.exp))
    }

    /// Whether the token's header names one of this gateway's keys (else it may be an
    /// external issuer's).
    pub fn knows(&self, header: &Header) -> bool {
        header.kid.as_ref().is_some_and(|kid| self.verifying.contains_key(kid))
    }

    /// The claims of a token this gateway issued; any defect answers 401 saying which.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let header = header_of(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid_token(format!("algorithm {:?} is not accepted; tokens are EdDSA", header.alg)));
        }
        let key = header
            .kid
            .as_ref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or_else(|| invalid_token("the token's key (kid) is not one of this gateway's keys"))?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map(|d| d.claims).map_err(rejected)
    }
}

/// The header of a token of a sane size; 401 otherwise.
pub fn header_of(token: &str) -> Result<Header, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid_token(format!("the token is longer than {MAX_TOKEN_BYTES} bytes")));
    }
    let malformed = || invalid_token("the token is not a well-formed JWT");
    let base64url = |part: &str| part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| base64url(p)) {
        return Err(malformed());
    }
    jsonwebtoken::decode_header(token).map_err(|_| malformed())
}

pub fn invalid_token(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, message)
        .with_header(actix_web::http::header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#.to_owned())
}

/// Says which check a token failed.
pub fn rejected(e: jsonwebtoken::errors::Error) -> ApiError {
    let message = match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted",
        ErrorKind::InvalidAudience => "the token's audience (aud) is not accepted",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "the token's algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is not a well-formed JWT",
    };
    invalid_token(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let pem = TokenIssuer::generate_pem().expect("generating a key works");
        TokenIssuer::new(&pem, &[], 60).expect("a generated key loads")
    }

    #[test]
    fn issued_tokens_verify_and_name_their_key() {
        let issuer = issuer();
        let (token, exp) = issuer.issue("abc").expect("issuing works");
        let claims = issuer.verify(&token).expect("own token verifies");
        assert_eq!(claims.sub, "abc");
        assert_eq!(claims.exp, exp);
        assert_eq!(issuer.jwks()["keys"][0]["kid"], issuer.kid());
    }

    #[test]
    fn a_previous_key_verifies_but_does_not_sign() {
        let (old_pem, new_pem) = (TokenIssuer::generate_pem().expect("key"), TokenIssuer::generate_pem().expect("key"));
        let old = TokenIssuer::new(&old_pem, &[], 60).expect("old");
        let (old_token, _) = old.issue("abc").expect("issuing works");
        let rotated = TokenIssuer::new(&new_pem, &[old_pem.expose_secret().to_owned()], 60).expect("rotated");
        assert_eq!(rotated.verify(&old_token).expect("still verifies").sub, "abc");
        let (new_token, _) = rotated.issue("abc").expect("issuing works");
        assert_ne!(header_of(&new_token).expect("header").kid.as_deref(), Some(old.kid()));
        let kids: Vec<&str> =
            rotated.jwks()["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
        assert_eq!(kids, [rotated.kid(), old.kid()]);
    }
}
