//! The auth function: `POST /auth/login`, `/auth/refresh`, `/auth/logout`, `GET /auth/me`, and
//! admin user management under `/auth/users` (scoped to the admin's tenant).

pub mod cli;

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use shared::auth::store::StoreError;
use shared::auth::{password, AuthStore, Claims, JwtKeys, User};
use shared::http::{Admin, ApiError, ApiResult, Authenticated, Json};

#[derive(Clone)]
pub struct AuthState {
    pub store: AuthStore,
    pub keys: Arc<JwtKeys>,
    pub token_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
}

impl FromRef<AuthState> for Arc<JwtKeys> {
    fn from_ref(state: &AuthState) -> Self {
        state.keys.clone()
    }
}

/// Builds the function from config and clients: what `main` serves and the local runner mounts.
pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let auth = config.auth().map_err(|e| e.to_string())?;
    let tables = config.tables().map_err(|e| e.to_string())?;
    let clients = shared::aws::Clients::new(sdk);
    let dynamodb = clients.dynamodb();
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let state = AuthState {
        store: AuthStore::new(dynamodb, tables.state),
        keys,
        token_ttl_secs: auth.token_expiration_secs,
        refresh_ttl_secs: config
            .refresh_token_expiration_secs()
            .map_err(|e| e.to_string())?,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: AuthState) -> Router {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/users", post(create_user).get(list_users))
        .route("/auth/users/{username}", patch(update_user).get(get_user))
        .with_state(state)
}

use shared::services::users::store_error;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
    /// User names are unique per tenant, so a login names both. Left out, only users created
    /// before names were per tenant are found (older clients keep working for them).
    tenant: Option<String>,
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
}

fn keys_unavailable() -> ApiError {
    ApiError::unavailable_for(
        1,
        "tokens cannot be signed right now (the signing keys could not be read); retry shortly",
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl AuthState {
    fn access_token(&self, user: &User) -> ApiResult<String> {
        let iat = now();
        let claims = Claims {
            sub: user.username.clone(),
            tenant: user.tenant.clone(),
            roles: user.roles.clone(),
            iat,
            exp: iat + self.token_ttl_secs as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            ver: user.token_version,
        };
        self.keys.issue(&claims).map_err(|_| keys_unavailable())
    }

    /// Checked before anything is changed: a login or a refresh that could not sign would leave
    /// a refresh family behind, or use up the caller's refresh token, for nothing. Also reads
    /// the keys again when this environment's copy is old, so tokens are signed with the latest
    /// rotation's key whenever the environment started.
    async fn ready_to_sign(&self) -> ApiResult<()> {
        if self.keys.ready_to_sign().await {
            Ok(())
        } else {
            Err(keys_unavailable())
        }
    }

    fn tokens(&self, user: &User, refresh_token: String) -> ApiResult<TokenResponse> {
        Ok(TokenResponse {
            access_token: self.access_token(user)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.token_ttl_secs,
        })
    }

    fn refresh_expiry(&self) -> i64 {
        now() + self.refresh_ttl_secs as i64
    }
}

const BAD_LOGIN: &str = "unknown user or wrong password";

async fn login(
    State(s): State<AuthState>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let user = match &req.tenant {
        Some(tenant) => s.store.user(tenant, &req.username).await,
        None => s.store.user_without_tenant(&req.username).await,
    }
    .map_err(store_error)?;
    // Verify against a decoy when the user is unknown: same work, same answer, no user probing.
    let hash = user
        .as_ref()
        .map_or(password::decoy_hash(), |u| u.password_hash.as_str());
    let password_ok = password::verify(&req.password, hash);
    let user = match user {
        Some(u) if password_ok && !u.disabled => u,
        Some(u) if password_ok && u.disabled => {
            return Err(ApiError::forbidden("this user is disabled"))
        }
        _ => return Err(ApiError::unauthorized(BAD_LOGIN)),
    };
    s.ready_to_sign().await?;
    let refresh = s
        .store
        .new_family(
            &shared::auth::user_ref(&user.tenant, &user.username),
            s.refresh_expiry(),
        )
        .await
        .map_err(store_error)?;
    tracing::info!(user = %user.username, tenant = %user.tenant, "login");
    Ok(Json(s.tokens(&user, refresh.token)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(
    State(s): State<AuthState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    s.ready_to_sign().await?;
    let (reference, next) = s
        .store
        .rotate(&req.refresh_token, now(), s.refresh_expiry())
        .await
        .map_err(|e| {
            if e == StoreError::RefreshReused {
                tracing::warn!("refresh token reuse detected; family revoked");
            }
            store_error(e)
        })?;
    let user = s
        .store
        .user_by_ref(&reference)
        .await
        .map_err(store_error)?
        .filter(|u| !u.disabled)
        .ok_or_else(|| ApiError::unauthorized("this user no longer exists or is disabled"))?;
    Ok(Json(s.tokens(&user, next.token)?))
}

async fn logout(
    State(s): State<AuthState>,
    Json(req): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    s.store
        .logout(&req.refresh_token, now())
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(
    State(s): State<AuthState>,
    Authenticated(claims): Authenticated,
) -> ApiResult<Json<serde_json::Value>> {
    let user = shared::services::users::me(&s.store, &claims).await?;
    Ok(Json(user.public()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    /// Defaults to the admin's own tenant; an admin cannot create users in another tenant.
    tenant: Option<String>,
}

fn valid_username(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Built-in roles: `admin` manages the tenant, `user` authors and runs workflows, `approver`
/// decides approvals. An admin may also grant the tenant's own roles (lower-case names, e.g.
/// `finance`), which a workflow can name as its approvers.
const ROLES: [&str; 3] = ["admin", "user", "approver"];
/// Roles only the operator grants (`auth create-admin --billing`): `billing` may set a tenant's
/// prices below list.
const OPERATOR_ROLES: [&str; 1] = ["billing"];

fn valid_role(role: &str) -> bool {
    (2..=32).contains(&role.len())
        && role.starts_with(|c: char| c.is_ascii_lowercase())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Roles an admin may grant: built-in or the tenant's own, never the operator's.
fn check_roles(roles: &[String]) -> ApiResult<()> {
    match roles
        .iter()
        .find(|r| OPERATOR_ROLES.contains(&r.as_str()) || !valid_role(r))
    {
        Some(bad) => Err(ApiError::unprocessable(
            "invalid-role",
            format!(
                "role {bad:?} cannot be granted: use {ROLES:?} or a name of 2-32 lower-case letters, digits, '-' or '_' (not an operator role)"
            ),
        )),
        None => Ok(()),
    }
}

/// Creates a user; shared by the admin API and the operator's `create-admin` command.
pub async fn create(
    store: &AuthStore,
    username: &str,
    pw: &str,
    tenant: &str,
    roles: Vec<String>,
) -> ApiResult<User> {
    if !valid_username(username) {
        return Err(ApiError::unprocessable(
            "invalid-username",
            "username must be 3-64 characters of letters, digits, '-', '_', '.', '@'",
        ));
    }
    if !valid_username(tenant) {
        return Err(ApiError::unprocessable(
            "invalid-tenant",
            "tenant must be 3-64 characters of letters, digits, '-', '_', '.'",
        ));
    }
    if let Some(bad) = roles.iter().find(|r| !valid_role(r)) {
        return Err(ApiError::unprocessable(
            "invalid-role",
            format!("role {bad:?} is not a role name; built-in roles are {ROLES:?}"),
        ));
    }
    let password_hash =
        password::hash(pw).map_err(|e| ApiError::unprocessable("weak-password", e))?;
    let user = User {
        username: username.to_owned(),
        user_id: uuid::Uuid::new_v4().to_string(),
        tenant: tenant.to_owned(),
        roles: if roles.is_empty() {
            vec!["user".into()]
        } else {
            roles
        },
        disabled: false,
        token_version: 0,
        created_at: chrono::Utc::now().to_rfc3339(),
        password_hash,
    };
    store.create_user(user.clone()).await.map_err(store_error)?;
    Ok(user)
}

async fn create_user(
    State(s): State<AuthState>,
    Admin(admin): Admin,
    Json(req): Json<CreateUser>,
) -> ApiResult<impl IntoResponse> {
    let tenant = req.tenant.unwrap_or_else(|| admin.tenant.clone());
    if tenant != admin.tenant {
        return Err(ApiError::forbidden(
            "an admin manages users of their own tenant only",
        ));
    }
    check_roles(&req.roles)?;
    let user = create(&s.store, &req.username, &req.password, &tenant, req.roles).await?;
    tracing::info!(admin = %admin.sub, user = %user.username, "user created");
    Ok((StatusCode::CREATED, Json(user.public())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i32>,
    after: Option<String>,
}

async fn list_users(
    State(s): State<AuthState>,
    Admin(admin): Admin,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let (users, next) =
        shared::services::users::list(&s.store, &admin, q.limit, q.after.as_deref()).await?;
    Ok(Json(serde_json::json!({
        "items": users.iter().map(User::public).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn get_user(
    State(s): State<AuthState>,
    Admin(admin): Admin,
    Path(username): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    s.store
        .user(&admin.tenant, &username)
        .await
        .map_err(store_error)?
        .map(|u| Json(u.public()))
        .ok_or_else(|| ApiError::not_found(format!("no such user {username}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    disabled: Option<bool>,
    roles: Option<Vec<String>>,
}

async fn update_user(
    State(s): State<AuthState>,
    Admin(admin): Admin,
    Path(username): Path<String>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Json<serde_json::Value>> {
    if let Some(roles) = &req.roles {
        check_roles(roles)?;
    }
    if username == admin.sub
        && (req.disabled == Some(true)
            || req
                .roles
                .as_ref()
                .is_some_and(|r| !r.iter().any(|r| r == "admin")))
    {
        return Err(ApiError::unprocessable(
            "self-lockout",
            "an admin cannot disable or demote themselves",
        ));
    }
    let user = s
        .store
        .update_user(&admin.tenant, &username, req.disabled, req.roles)
        .await
        .map_err(store_error)?;
    Ok(Json(user.public()))
}
