//! Short-lived JWTs issued in exchange for an API key, signed with Ed25519 (EdDSA).
//! Verification pins the algorithm and checks kid, issuer, audience, expiry and not-before.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const ISSUER: &str = "modelgate";
pub const AUDIENCE: &str = "modelgate";
/// Tokens longer than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The id of the API key the token was issued for; its state is checked on every use.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

pub struct TokenIssuer {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid JWT signing key: {0}")]
pub struct KeyError(String);

impl TokenIssuer {
    /// A new Ed25519 private key as PKCS#8 PEM.
    pub fn generate_pem() -> Result<SecretString, KeyError> {
        let seed: [u8; 32] = rand::random();
        let pem = SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(SecretString::from(pem.to_string()))
    }

    pub fn from_pem(pem: &SecretString, ttl_secs: i64) -> Result<Self, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem.expose_secret()).map_err(|e| KeyError(e.to_string()))?;
        let public = signing.verifying_key().to_bytes();
        let kid = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(public)[..8]);
        let encoding = EncodingKey::from_ed_pem(pem.expose_secret().as_bytes()).map_err(|e| KeyError(e.to_string()))?;
        let decoding = DecodingKey::from_ed_der(&public);
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(Self { kid, encoding, decoding, validation, ttl_secs })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for the key `key_id`, and when it expires (seconds since the epoch).
    pub fn issue(&self, key_id: &str) -> Result<(String, i64), ApiError> {
        let now = registry::db::now_ms() / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: key_id.into(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(ApiError::internal)?;
        Ok((token, claims.exp))
    }

    /// The claims of a token this gateway issued; any defect answers 401.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = || ApiError::unauthorized("invalid or expired token");
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if header.alg != Algorithm::EdDSA || header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(invalid());
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let pem = TokenIssuer::generate_pem().expect("generating a key works");
        TokenIssuer::from_pem(&pem, 60).expect("a generated key loads")
    }

    #[test]
    fn issued_tokens_verify_and_name_their_key() {
        let issuer = issuer();
        let (token, exp) = issuer.issue("abc").expect("issuing works");
        let claims = issuer.verify(&token).expect("own token verifies");
        assert_eq!(claims.sub, "abc");
        assert_eq!(claims.exp, exp);
    }

    #[test]
    fn tokens_of_another_key_alg_none_and_tampering_fail() {
        let (token, _) = issuer().issue("abc").expect("issuing works");
        assert!(issuer().verify(&token).is_err(), "a token signed by another key must fail");

        let own = issuer();
        let (token, _) = own.issue("abc").expect("issuing works");
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none_header = b64.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, own.kid()));
        assert!(own.verify(&format!("{none_header}.{}.", parts[1])).is_err(), "alg none must fail");
        let hs_header = b64.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, own.kid()));
        assert!(own.verify(&format!("{hs_header}.{}.{}", parts[1], parts[2])).is_err(), "HS256 must fail");
        let forged =
            b64.encode(r#"{"iss":"modelgate","aud":"modelgate","sub":"root","iat":0,"nbf":0,"exp":99999999999}"#);
        assert!(own.verify(&format!("{}.{forged}.{}", parts[0], parts[2])).is_err(), "a changed payload must fail");
        assert!(own.verify(&"a".repeat(10_000)).is_err());
    }
}
