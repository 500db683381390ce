//! Users as the API shows them: the caller, and (for admins) the users of their tenant.

use crate::auth::store::StoreError;
use crate::auth::{AuthStore, Claims, User};
use crate::http::{ApiError, ApiResult};

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::UserExists(_) => ApiError::conflict("user-exists", e.to_string()),
        StoreError::NoSuchUser(_) => ApiError::not_found(e.to_string()),
        StoreError::InvalidRefresh | StoreError::RefreshReused => {
            ApiError::unauthorized(e.to_string())
        }
        StoreError::Backend(b) => ApiError::internal(b),
    }
}

pub fn require_admin(claims: &Claims) -> ApiResult<()> {
    if claims.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("this needs the admin role"))
    }
}

/// The caller, as long as they exist and are enabled.
pub async fn me(store: &AuthStore, claims: &Claims) -> ApiResult<User> {
    store
        .user(&claims.tenant, &claims.sub)
        .await
        .map_err(store_error)?
        .filter(|u| !u.disabled)
        .ok_or_else(|| ApiError::unauthorized("this user no longer exists or is disabled"))
}

/// One page of the admin's tenant's users, by name after `after`.
pub async fn list(
    store: &AuthStore,
    claims: &Claims,
    limit: Option<i32>,
    after: Option<&str>,
) -> ApiResult<(Vec<User>, Option<String>)> {
    require_admin(claims)?;
    // `after` is the last user name of the previous page: anything else cannot continue one.
    if after.is_some_and(|a| a.is_empty() || a.len() > 64 || a.chars().any(char::is_control)) {
        return Err(ApiError::bad_request(
            "invalid-cursor",
            "`after` is the last user name of the previous page",
        ));
    }
    let limit = limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-query",
            "limit must be between 1 and 100",
        ));
    }
    store
        .users(&claims.tenant, limit, after)
        .await
        .map_err(store_error)
}

/// A user of the caller's tenant: the caller themselves, or anyone for an admin. `None` for
/// every other name, whether or not it exists.
pub async fn find(store: &AuthStore, claims: &Claims, username: &str) -> ApiResult<Option<User>> {
    if username != claims.sub && !claims.is_admin() {
        return Ok(None);
    }
    store
        .user(&claims.tenant, username)
        .await
        .map_err(store_error)
}
