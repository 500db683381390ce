//! The secrets function: a tenant's secrets for `${secret:NAME}` in http headers and mcp
//! arguments. `GET /secrets` and `GET /secrets/{name}` show metadata only; admins `PUT` a value
//! (write-only: no answer ever carries it, and this function cannot read it back) and `DELETE`.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::domain::secret_ref;
use shared::http::{Admin, ApiError, ApiResult, Authenticated, Json};
use shared::secrets::{SecretError, SecretInfo, TenantSecrets, MAX_VALUE_CHARS};

#[derive(Clone)]
pub struct SecretsState {
    pub secrets: Arc<TenantSecrets>,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<SecretsState> for Arc<JwtKeys> {
    fn from_ref(state: &SecretsState) -> Self {
        state.keys.clone()
    }
}

pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let (keys, limiter) = shared::http::authenticated(config, sdk).await?;
    let state = SecretsState {
        secrets: Arc::new(config.tenant_secrets(sdk).map_err(|e| e.to_string())?),
        keys,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: SecretsState) -> Router {
    Router::new()
        .route("/secrets", get(list))
        .route("/secrets/{name}", get(read).put(set).delete(remove))
        .with_state(state)
}

fn secret_error(e: SecretError) -> ApiError {
    match e {
        SecretError::NotFound(_) => ApiError::not_found(e.to_string()),
        SecretError::Backend(_) => ApiError::internal(e),
    }
}

fn checked_name(name: &str) -> ApiResult<()> {
    if secret_ref::valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid-secret-name",
            "a secret's name is 1-64 letters, digits, `-` or `_`",
        ))
    }
}

fn view(info: &SecretInfo) -> Value {
    json!({
        "name": info.name,
        "description": info.description,
        "reference": format!("${{secret:{}}}", info.name),
        "version": info.version,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    })
}

async fn list(
    State(s): State<SecretsState>,
    Authenticated(claims): Authenticated,
) -> ApiResult<Json<Value>> {
    let secrets = s.secrets.list(&claims.tenant).await.map_err(secret_error)?;
    Ok(Json(
        json!({"secrets": secrets.iter().map(view).collect::<Vec<_>>()}),
    ))
}

async fn read(
    State(s): State<SecretsState>,
    Authenticated(claims): Authenticated,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    checked_name(&name)?;
    let info = s
        .secrets
        .get(&claims.tenant, &name)
        .await
        .map_err(secret_error)?;
    Ok(Json(view(&info)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSecret {
    /// Write-only: stored in Secrets Manager, never returned.
    value: String,
    description: Option<String>,
}

async fn set(
    State(s): State<SecretsState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
    Json(req): Json<SetSecret>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    checked_name(&name)?;
    if req.value.is_empty() || req.value.chars().count() > MAX_VALUE_CHARS {
        return Err(ApiError::unprocessable(
            "invalid-secret-value",
            format!("`value` must be 1 to {} characters", MAX_VALUE_CHARS),
        ));
    }
    if req.value.contains('\0') {
        return Err(ApiError::unprocessable(
            "invalid-secret-value",
            "`value` cannot hold NUL characters",
        ));
    }
    if req
        .description
        .as_deref()
        .is_some_and(|d| d.chars().count() > 256)
    {
        return Err(ApiError::unprocessable(
            "invalid-description",
            "`description` is at most 256 characters",
        ));
    }
    let (info, created) = s
        .secrets
        .put(
            &claims.tenant,
            &name,
            &req.value,
            req.description,
            chrono::Utc::now(),
        )
        .await
        .map_err(secret_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&info))))
}

async fn remove(
    State(s): State<SecretsState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    checked_name(&name)?;
    s.secrets
        .delete(&claims.tenant, &name)
        .await
        .map_err(secret_error)?;
    Ok(StatusCode::NO_CONTENT)
}
