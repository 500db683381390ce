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
    /// The keys have not been read yet and the read failed (Secrets Manager unreachable): the
    /// token can be neither checked nor signed now.
    #[error("the signing keys could not be read")]
    Unavailable,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The signing key and the keys still accepted for verification.
struct KeySet {
    current: Key,
    previous: Vec<Key>,
}

/// The signing key and the keys still accepted for verification, as last read; with a source to
/// read them again from after a rotation (see [`JwtKeys::verify_fresh`]).
pub struct JwtKeys {
    /// `None` until the first read succeeds: keys from Secrets Manager are read in the
    /// background from cold start on, and the first request that needs them waits for that read
    /// (see [`JwtKeys::pending`]).
    set: std::sync::RwLock<Option<std::sync::Arc<KeySet>>>,
    reload: Option<Reload>,
    /// Where a verified token's user is checked for revocation (absent in unit tests).
    sessions: Option<std::sync::Arc<super::Sessions>>,
}

/// Where the keys are read again from, and when they last were.
struct Reload {
    source: crate::config::JwtKeySource,
    secrets: aws_sdk_secretsmanager::Client,
    /// The last read attempted again and whether it succeeded (none yet). Held during a read,
    /// so concurrent callers wait for it instead of reading too.
    last_try: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
    /// When the last failed first read ended (see [`JwtKeys::ready`]); held during a read.
    first_try: tokio::sync::Mutex<Option<std::time::Instant>>,
    read_at: std::sync::Mutex<std::time::Instant>,
}

/// How long a read of the keys may take before the caller goes on with those it has.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads of the keys on tokens with an unknown `kid` are at most this frequent per environment,
/// whatever callers send (a forged `kid` costs nothing but this).
const RELOAD_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// While no keys could be read yet, requests try again at most this often (each waits for the
/// attempt in flight instead of starting its own).
const FIRST_READ_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// A signer reads the keys again when its copy is older than this, so that it signs with the
/// key of the latest rotation (and tokens it signs verify where only that rotation's keys are
/// known).
pub const SIGNING_KEYS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);

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

/// `jwt_validations_total` by result.
fn count(result: &Result<Claims, TokenError>) {
    let outcome = match result {
        Ok(_) => "valid",
        Err(TokenError::Expired) => "expired",
        Err(TokenError::UnknownKey) => "unknown_key",
        Err(TokenError::Invalid(_)) => "invalid",
        Err(TokenError::Unavailable) => "unavailable",
    };
    emit(
        "jwt_validations_total",
        1.0,
        Unit::Count,
        &[("result", outcome)],
    );
}

fn key_set(current: &str, previous: &[String]) -> Result<KeySet, String> {
    Ok(KeySet {
        current: key(current)?,
        previous: previous.iter().map(|p| key(p)).collect::<Result<_, _>>()?,
    })
}

impl JwtKeys {
    /// `current` signs; `previous` (e.g. Secrets Manager's AWSPREVIOUS) still verifies.
    pub fn new(current: &str, previous: &[String]) -> Result<Self, String> {
        Ok(Self {
            set: std::sync::RwLock::new(Some(std::sync::Arc::new(key_set(current, previous)?))),
            reload: None,
            sessions: None,
        })
    }

    /// Keys that `source` holds, not read yet: the first caller of [`JwtKeys::ready`] (a task
    /// spawned at cold start, so the read overlaps the runtime's first poll for work) reads them,
    /// and callers that need them wait for that read. Init stays free of the round trip, and a
    /// Secrets Manager outage at cold start answers 503 until it passes instead of failing every
    /// start of the environment.
    pub fn pending(
        source: crate::config::JwtKeySource,
        secrets: aws_sdk_secretsmanager::Client,
    ) -> Self {
        Self {
            set: std::sync::RwLock::new(None),
            reload: None,
            sessions: None,
        }
        .with_reload(source, secrets)
    }

    /// Reads the keys again from `source` when a token names a key this copy does not know (a
    /// rotation since this environment started), and before signing with a copy older than
    /// [`SIGNING_KEYS_MAX_AGE`].
    pub fn with_reload(
        mut self,
        source: crate::config::JwtKeySource,
        secrets: aws_sdk_secretsmanager::Client,
    ) -> Self {
        let now = std::time::Instant::now();
        self.reload = Some(Reload {
            source,
            secrets,
            last_try: tokio::sync::Mutex::new(None),
            first_try: tokio::sync::Mutex::new(None),
            read_at: std::sync::Mutex::new(now),
        });
        self
    }

    fn keys(&self) -> Option<std::sync::Arc<KeySet>> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether keys are known, reading them first if none have been read yet (at most once a
    /// second per environment while reads fail; concurrent callers share one read).
    pub async fn ready(&self) -> bool {
        if self.keys().is_some() {
            return true;
        }
        let Some(reload) = &self.reload else {
            return false;
        };
        // Its own gate, apart from the re-reads': the first read must not use up the slot a
        // rotation's re-read needs.
        let waiting_since = std::time::Instant::now();
        let mut last = reload.first_try.lock().await;
        if self.keys().is_some() {
            return true; // read while this caller waited
        }
        // A failed read is the answer to those that waited for it, and to all for a second.
        if last.is_some_and(|ended| {
            ended >= waiting_since || ended.elapsed() < FIRST_READ_AT_MOST_EVERY
        }) {
            return false;
        }
        let started = std::time::Instant::now();
        let ok = self.read_now(reload).await;
        // A read that outlasted its timeout by far was frozen with its environment (the one
        // spawned at cold start): its failure says nothing about now.
        *last = (!ok && started.elapsed() <= RELOAD_TIMEOUT * 3 / 2).then(std::time::Instant::now);
        self.keys().is_some()
    }

    /// Reads the keys again unless the last attempt was less than `interval` ago. `true` when
    /// the keys were read (now, or by the attempt within `interval`, which a concurrent caller
    /// waits for): they may or may not have changed.
    async fn reread(&self, interval: std::time::Duration) -> bool {
        let Some(reload) = &self.reload else {
            return false;
        };
        let mut last = reload.last_try.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < interval {
                return ok;
            }
        }
        let ok = self.read_now(reload).await;
        *last = Some((std::time::Instant::now(), ok));
        ok
    }

    /// One read of the keys (bounded by [`RELOAD_TIMEOUT`]); `true` when they were replaced.
    async fn read_now(&self, reload: &Reload) -> bool {
        // A first read takes a missing previous version as none; a re-read keeps the keys it
        // has rather than forget one it cannot read.
        let strict = self.keys().is_some();
        let read = tokio::time::timeout(
            RELOAD_TIMEOUT,
            super::keys::read(&reload.source, &reload.secrets, strict),
        )
        .await
        .unwrap_or_else(|_| Err("the read timed out".to_owned()));
        self.replace(reload, read)
    }

    fn replace(&self, reload: &Reload, read: Result<(String, Vec<String>), String>) -> bool {
        let first = self.keys().is_none();
        match read.and_then(|(current, previous)| key_set(&current, &previous)) {
            Ok(set) => {
                *self.set.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::sync::Arc::new(set));
                *reload.read_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    std::time::Instant::now();
                true
            }
            Err(e) => {
                let read = if first { "first" } else { "again" };
                emit(
                    "jwt_key_reads_failed_total",
                    1.0,
                    Unit::Count,
                    &[("read", read)],
                );
                if first {
                    tracing::error!(error = %e, "JWT keys could not be read; requests that need them answer 503 until they can");
                } else {
                    tracing::error!(error = %e, "JWT keys could not be read again, or are unusable; keeping the previous ones");
                }
                false
            }
        }
    }

    /// [`JwtKeys::verify`], reading the keys again first when the token names a key this copy
    /// does not know (at most every 30 s per environment): after a rotation, an environment
    /// started before it accepts tokens signed with the new key. Counted once.
    pub async fn verify_fresh(&self, token: &str) -> Result<Claims, TokenError> {
        if !self.ready().await {
            count(&Err(TokenError::Unavailable));
            return Err(TokenError::Unavailable);
        }
        let result = match self.verify_inner(token) {
            Err(TokenError::UnknownKey) if self.reread(RELOAD_AT_MOST_EVERY).await => {
                self.verify_inner(token)
            }
            other => other,
        };
        count(&result);
        result
    }

    /// Before signing: waits for the first read of the keys, and reads them again if this copy
    /// is older than [`SIGNING_KEYS_MAX_AGE`]. `false` when there are no keys to sign with.
    pub async fn ready_to_sign(&self) -> bool {
        if !self.ready().await {
            return false;
        }
        let stale = self.reload.as_ref().is_some_and(|r| {
            r.read_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                >= SIGNING_KEYS_MAX_AGE
        });
        if stale {
            self.reread(RELOAD_AT_MOST_EVERY).await;
        }
        true
    }

    pub fn with_sessions(mut self, sessions: std::sync::Arc<super::Sessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    pub fn sessions(&self) -> Option<&super::Sessions> {
        self.sessions.as_deref()
    }

    pub fn current_kid(&self) -> Option<String> {
        self.keys().map(|k| k.current.kid.clone())
    }

    /// A signed token, or [`TokenError::Unavailable`] before any keys could be read (callers
    /// check [`JwtKeys::ready_to_sign`] before changing anything they would sign for).
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        super::hs256::install();
        let keys = self.keys().ok_or(TokenError::Unavailable)?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.current.kid.clone());
        encode(&header, claims, &keys.current.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies signature, algorithm (HS256 only: `none` and others are refused) and expiry (no
    /// leeway). Counts `jwt_validations_total` by result.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let result = self.verify_inner(token);
        // Not counted: the caller waits for the keys and verifies again (`verify_fresh`).
        if result != Err(TokenError::Unavailable) {
            count(&result);
        }
        result
    }

    fn verify_inner(&self, token: &str) -> Result<Claims, TokenError> {
        super::hs256::install();
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
        let keys = self.keys().ok_or(TokenError::Unavailable)?;
        let key = std::iter::once(&keys.current)
            .chain(&keys.previous)
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
        let token = keys.issue(&claims(60)).unwrap();
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
            keys.verify(&keys.issue(&claims(-1)).unwrap()),
            Err(TokenError::Expired)
        );
        let token = keys.issue(&claims(60)).unwrap();
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
            keys.current_kid().unwrap()
        ));
        let none = format!("{header}.{}.", token.split('.').nth(1).unwrap());
        assert!(matches!(keys.verify(&none), Err(TokenError::Invalid(_))));
        assert!(JwtKeys::new("short", &[]).is_err());
    }
}
