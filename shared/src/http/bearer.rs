//! Bearer-token extractors: `Authenticated` (any valid token) and `Admin` (role `admin`).

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiError;
use crate::auth::{Claims, JwtKeys, TokenError};

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Verifies the bearer token once per request and keeps the claims in the request, so the rate
/// limiter (which runs first) and the handler's extractor share one verification.
pub fn identify(keys: Arc<JwtKeys>) -> super::rate_limit::Identify {
    Arc::new(move |req: &mut Request| {
        let verified = bearer(req.headers()).map(|t| keys.verify(t));
        let principal = match &verified {
            Some(Ok(claims)) => Some(super::rate_limit::Caller {
                tenant: claims.tenant.clone(),
                sub: claims.sub.clone(),
            }),
            _ => None,
        };
        if let Some(result) = verified {
            req.extensions_mut().insert(Verified(result));
        }
        principal
    })
}

#[derive(Clone)]
struct Verified(Result<Claims, TokenError>);

/// A request with a valid access token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        let result = match parts.extensions.remove::<Verified>() {
            // A key rotated since this environment read its keys, or none read yet: read them
            // (rate-limited; a first read in flight is waited for).
            Some(Verified(Err(e @ (TokenError::UnknownKey | TokenError::Unavailable)))) => {
                match bearer(&parts.headers) {
                    Some(token) => keys.verify_fresh(token).await,
                    None => Err(e),
                }
            }
            Some(Verified(result)) => result,
            None => {
                let token = bearer(&parts.headers).ok_or_else(|| {
                    ApiError::unauthorized(
                        "send an access token as `Authorization: Bearer <token>`",
                    )
                })?;
                keys.verify_fresh(token).await
            }
        };
        let claims = result.map_err(|e| {
            if e == TokenError::Unavailable {
                return ApiError::unavailable_for(
                    1,
                    "access tokens cannot be checked right now (the signing keys could not be \
                     read); retry shortly",
                );
            }
            ApiError::unauthorized(match e {
                TokenError::Expired => "the access token has expired; refresh it".to_owned(),
                TokenError::UnknownKey => {
                    "the access token was signed with a key that is no longer valid".to_owned()
                }
                TokenError::Invalid(_) | TokenError::Unavailable => {
                    "the access token is not valid".to_owned()
                }
            })
        })?;
        if let Some(sessions) = keys.sessions() {
            sessions
                .check(&claims)
                .await
                .map_err(ApiError::unauthorized)?;
        }
        Ok(Authenticated(claims))
    }
}

/// A request with a valid access token that carries the `admin` role.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

impl<S> FromRequestParts<S> for Admin
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if claims.is_admin() {
            Ok(Admin(claims))
        } else {
            Err(ApiError::forbidden("this needs the admin role"))
        }
    }
}
