//! Access tokens: HS256 JWTs with a `kid`, so that after a key rotation tokens signed with the
//! previous key stay valid until they expire.

use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::MIN_JWT_SECRET_BYTES;
use crate::telemetry::metrics::{emit, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The user's token version when this was issued (see `User::token_version`).
    #[serde(default)]
    pub ver: u32,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token is invalid: {0}")]
    Invalid(String),
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The signing key and the keys still accepted for verification.
pub struct JwtKeys {
    current: Key,
    previous: Vec<Key>,
    /// Where a verified token's user is checked for revocation (absent in unit tests).
    sessions: Option<std::sync::Arc<super::Sessions>>,
}

/// A key's id: a short hash of it, which says which key signed a token and nothing about the key.
fn kid(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..8])
}

fn key(secret: &str) -> Result<Key, String> {
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(format!(
            "JWT key is {} bytes long; use at least {MIN_JWT_SECRET_BYTES}",
            secret.len()
        ));
    }
    Ok(Key {
        kid: kid(secret.as_bytes()),
        encoding: EncodingKey::from_secret(secret.as_bytes()),
        decoding: DecodingKey::from_secret(secret.as_bytes()),
    })
}

impl JwtKeys {
    /// `current` signs; `previous` (e.g. Secrets Manager's AWSPREVIOUS) still verifies.
    pub fn new(current: &str, previous: &[String]) -> Result<Self, String> {
        Ok(Self {
            current: key(current)?,
            previous: previous.iter().map(|p| key(p)).collect::<Result<_, _>>()?,
            sessions: None,
        })
    }

    pub fn with_sessions(mut self, sessions: std::sync::Arc<super::Sessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    pub fn sessions(&self) -> Option<&super::Sessions> {
        self.sessions.as_deref()
    }

    pub fn current_kid(&self) -> &str {
        &self.current.kid
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.kid.clone());
        encode(&header, claims, &self.current.encoding).unwrap_or_default()
    }

    /// Verifies signature, algorithm (HS256 only: `none` and others are refused) and expiry (no
    /// leeway). Counts `jwt_validations_total` by result.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let result = self.verify_inner(token);
        let outcome = match &result {
            Ok(_) => "valid",
            Err(TokenError::Expired) => "expired",
            Err(TokenError::UnknownKey) => "unknown_key",
            Err(TokenError::Invalid(_)) => "invalid",
        };
        emit(
            "jwt_validations_total",
            1.0,
            Unit::Count,
            &[("result", outcome)],
        );
        result
    }

    fn verify_inner(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".into()))?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        decode::<Claims>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef-key-a";
    const B: &str = "0123456789abcdef0123456789abcdef-key-b";

    fn claims(exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "u1".into(),
            tenant: "t1".into(),
            roles: vec!["admin".into()],
            iat: now,
            exp: now + exp_in,
            jti: "j1".into(),
            ver: 0,
        }
    }

    #[test]
    fn round_trip_and_rotation() {
        let keys = JwtKeys::new(A, &[]).unwrap();
        let token = keys.issue(&claims(60));
        assert_eq!(keys.verify(&token).unwrap(), keys.verify(&token).unwrap());
        let rotated = JwtKeys::new(B, &[A.to_owned()]).unwrap();
        assert_eq!(
            rotated.verify(&token).unwrap().sub,
            "u1",
            "old key still verifies"
        );
        let forgotten = JwtKeys::new(B, &[]).unwrap();
        assert_eq!(forgotten.verify(&token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn expired_tampered_and_none_are_refused() {
        let keys = JwtKeys::new(A, &[]).unwrap();
        assert_eq!(
            keys.verify(&keys.issue(&claims(-1))),
            Err(TokenError::Expired)
        );
        let token = keys.issue(&claims(60));
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = parts[1].replace('A', "B").replace('e', "f");
        assert!(matches!(
            keys.verify(&parts.join(".")),
            Err(TokenError::Invalid(_))
        ));
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            keys.current_kid()
        ));
        let none = format!("{header}.{}.", token.split('.').nth(1).unwrap());
        assert!(matches!(keys.verify(&none), Err(TokenError::Invalid(_))));
        assert!(JwtKeys::new("short", &[]).is_err());
    }
}
