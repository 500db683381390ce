//! Revocation before expiry: an access token is valid for an hour, but a disabled user, a role
//! change or a logout must end it sooner. Tokens carry the user's token version (`ver`); each
//! authenticated request compares it with the stored one, read at most once per user per
//! `ttl` in this process, so a revocation takes effect within `ttl` everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AuthStore, Claims};

/// Entries kept before the cache is emptied (a Lambda instance sees few users).
const MAX_ENTRIES: usize = 10_000;

struct Seen {
    tenant: String,
    version: u32,
    disabled: bool,
    at: Instant,
}

pub struct Sessions {
    store: AuthStore,
    ttl: Duration,
    cache: Mutex<HashMap<String, Option<Seen>>>,
}

impl Sessions {
    pub fn new(store: AuthStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(why)` when the token's user is gone, disabled or has revoked it.
    pub async fn check(&self, claims: &Claims) -> Result<(), String> {
        let who = super::user_ref(&claims.tenant, &claims.sub);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&who) {
                Some(Some(seen)) if seen.at.elapsed() < self.ttl => {
                    Some(Some((seen.tenant.clone(), seen.version, seen.disabled)))
                }
                _ => None,
            }
        };
        let current = match cached {
            Some(c) => c,
            None => {
                let user = self
                    .store
                    .user(&claims.tenant, &claims.sub)
                    .await
                    .map_err(|e| format!("the user store cannot be read: {e}"))?;
                let seen = user.map(|u| (u.tenant, u.token_version, u.disabled));
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
                cache.insert(
                    who,
                    seen.clone().map(|(tenant, version, disabled)| Seen {
                        tenant,
                        version,
                        disabled,
                        at: Instant::now(),
                    }),
                );
                seen
            }
        };
        match current {
            Some((tenant, _, disabled)) if tenant != claims.tenant || disabled => {
                Err("this user no longer exists or is disabled".into())
            }
            None => Err("this user no longer exists or is disabled".into()),
            Some((_, version, _)) if claims.ver < version => Err(
                "the access token was revoked (a logout, or a change to the user); log in again"
                    .into(),
            ),
            Some(_) => Ok(()),
        }
    }
}
