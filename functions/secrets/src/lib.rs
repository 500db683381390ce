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
    let clients = shared::aws::Clients::new(sdk);
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let state = SecretsState {
        secrets: Arc::new(config.tenant_secrets(&clients).map_err(|e| e.to_string())?),
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
        SecretError::TooMany => ApiError::conflict("too-many-secrets", e.to_string()),
        SecretError::RecentlyDeleted(_) => {
            ApiError::conflict("secret-being-deleted", e.to_string())
        }
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
        "hosts": info.hosts,
        "mcp_servers": info.mcp_servers,
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
    /// Hosts http steps may send it to; kept from the last PUT when left out.
    hosts: Option<Vec<String>>,
    /// MCP servers (registry names) mcp steps may send it to; kept when left out.
    mcp_servers: Option<Vec<String>>,
}

/// The most destinations one secret may list.
const MAX_DESTINATIONS: usize = 20;

/// Hosts as URLs name them (lower case), checked.
fn checked_hosts(hosts: Vec<String>) -> ApiResult<Vec<String>> {
    hosts
        .into_iter()
        .map(|h| {
            let lower = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if lower.contains('*') {
                return Err(ApiError::unprocessable(
                    "invalid-secret-hosts",
                    format!("`hosts`: `{h}`: list each host by its name (no wildcards)"),
                ));
            }
            let parsed = url::Url::parse(&format!("https://{lower}/"))
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned));
            match parsed {
                Some(host) if host == lower && !lower.is_empty() => Ok(lower),
                _ => Err(ApiError::unprocessable(
                    "invalid-secret-hosts",
                    format!("`hosts`: `{h}` is not a host name (no scheme, port or path)"),
                )),
            }
        })
        .collect()
}

async fn set(
    State(s): State<SecretsState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
    Json(req): Json<SetSecret>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    checked_name(&name)?;
    let chars = req.value.chars().count();
    if !(secret_ref::MIN_VALUE_CHARS..=MAX_VALUE_CHARS).contains(&chars) {
        return Err(ApiError::unprocessable(
            "invalid-secret-value",
            format!(
                "`value` must be {} to {MAX_VALUE_CHARS} characters (shorter ones could not be told apart from other text to redact them)",
                secret_ref::MIN_VALUE_CHARS
            ),
        ));
    }
    if req.value.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid-secret-value",
            "`value` cannot hold control characters such as line breaks (it is sent in headers)",
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
    let previous = match s.secrets.get(&claims.tenant, &name).await {
        Ok(info) => Some(info),
        Err(SecretError::NotFound(_)) => None,
        Err(e) => return Err(secret_error(e)),
    };
    let exists = previous.is_some();
    let allowed = match (req.hosts, req.mcp_servers) {
        (None, None) => None,
        (hosts, servers) => {
            // A field left out keeps what the secret had.
            let hosts = match hosts {
                Some(h) => checked_hosts(h)?,
                None => previous
                    .as_ref()
                    .map(|p| p.hosts.clone())
                    .unwrap_or_default(),
            };
            let servers = servers
                .or_else(|| previous.as_ref().map(|p| p.mcp_servers.clone()))
                .unwrap_or_default();
            if let Some(bad) = servers.iter().find(|n| !secret_ref::valid_name(n)) {
                return Err(ApiError::unprocessable(
                    "invalid-secret-mcp-servers",
                    format!("`mcp_servers`: `{bad}` is not a server name"),
                ));
            }
            if hosts.len() + servers.len() > MAX_DESTINATIONS {
                return Err(ApiError::unprocessable(
                    "too-many-destinations",
                    format!("a secret lists at most {MAX_DESTINATIONS} hosts and servers"),
                ));
            }
            Some((hosts, servers))
        }
    };
    if !exists
        && allowed
            .as_ref()
            .is_none_or(|(h, m)| h.is_empty() && m.is_empty())
    {
        return Err(ApiError::unprocessable(
            "secret-destinations-required",
            "a new secret names where it may be sent: `hosts` (http steps) and/or `mcp_servers` (mcp steps)",
        ));
    }
    let (info, created) = s
        .secrets
        .put(
            &claims.tenant,
            &name,
            &req.value,
            req.description,
            allowed,
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
