//! The MCP function: a tenant's registry of MCP servers for `mcp` steps.
//! `GET /mcp/servers`, `GET /mcp/servers/{name}`, `GET /mcp/servers/{name}/tools` (asks the
//! server), and for admins `PUT` (register or replace, with an optional bearer token kept in
//! Secrets Manager and never shown again) and `DELETE`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::http::{Admin, ApiError, ApiResult, Authenticated, Json};
use shared::mcp::{McpClients, RegistryError};

#[derive(Clone)]
pub struct McpState {
    pub clients: Arc<McpClients>,
    pub allow_private: bool,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<McpState> for Arc<JwtKeys> {
    fn from_ref(state: &McpState) -> Self {
        state.keys.clone()
    }
}

pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let (keys, limiter) = shared::http::authenticated(config, sdk).await?;
    let allow_private = config
        .engine()
        .map_err(|e| e.to_string())?
        .allow_private_networks;
    let timeout = config.mcp_timeout_secs().map_err(|e| e.to_string())?;
    let state = McpState {
        clients: Arc::new(McpClients::new(
            config.mcp_registry(sdk).map_err(|e| e.to_string())?,
            allow_private,
            Duration::from_secs(timeout),
        )),
        allow_private,
        keys,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: McpState) -> Router {
    Router::new()
        .route("/mcp/servers", get(list))
        .route(
            "/mcp/servers/{name}",
            get(read).put(register).delete(remove),
        )
        .route("/mcp/servers/{name}/tools", get(tools))
        .with_state(state)
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
        RegistryError::Backend(_) => ApiError::internal(e),
    }
}

fn checked_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid-server-name",
            "a server name is 1-64 letters, digits, `-` or `_`",
        ))
    }
}

async fn list(
    State(s): State<McpState>,
    Authenticated(claims): Authenticated,
) -> ApiResult<Json<Value>> {
    let servers = s
        .clients
        .registry()
        .list(&claims.tenant)
        .await
        .map_err(registry_error)?;
    Ok(Json(json!({
        "servers": servers.iter().map(|s| s.view()).collect::<Vec<_>>()
    })))
}

async fn read(
    State(s): State<McpState>,
    Authenticated(claims): Authenticated,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let server = s
        .clients
        .registry()
        .get(&claims.tenant, &name)
        .await
        .map_err(registry_error)?;
    Ok(Json(server.view()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    url: String,
    description: Option<String>,
    /// Sent as `Authorization: Bearer <token>`; stored as a secret, never returned.
    token: Option<String>,
}

async fn register(
    State(s): State<McpState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
    Json(req): Json<Register>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    checked_name(&name)?;
    shared::engine::http::checked_url(&req.url, s.allow_private).map_err(|e| {
        ApiError::unprocessable("invalid-server-url", format!("`url`: {}", e.message))
    })?;
    if req.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(ApiError::unprocessable(
            "invalid-token",
            "`token` is empty; leave it out for a server without auth",
        ));
    }
    let registry = s.clients.registry();
    let existed = match registry.get(&claims.tenant, &name).await {
        Ok(_) => true,
        Err(RegistryError::NotFound(_)) => false,
        Err(e) => return Err(registry_error(e)),
    };
    let server = registry
        .put(
            &claims.tenant,
            &name,
            &req.url,
            req.description,
            req.token.as_deref(),
            chrono::Utc::now(),
        )
        .await
        .map_err(registry_error)?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(server.view())))
}

async fn remove(
    State(s): State<McpState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.clients
        .registry()
        .delete(&claims.tenant, &name)
        .await
        .map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the server for its tools, over the same pooled session steps use.
async fn tools(
    State(s): State<McpState>,
    Authenticated(claims): Authenticated,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    match s.clients.list_tools(&claims.tenant, &name).await {
        Ok(tools) => Ok(Json(json!({"server": name, "tools": tools}))),
        Err(e) if e.kind == "McpServerNotRegistered" => Err(ApiError::not_found(e.message)),
        Err(e) if e.kind == "AddressNotAllowed" || e.kind == "InvalidRequest" => {
            Err(ApiError::unprocessable("invalid-server-url", e.message))
        }
        // The server, not this API, failed: a 424 (no 5xx for what a tenant's server does),
        // in words a person can act on; the transport's own text goes to the log only.
        Err(e) => {
            tracing::info!(server = %name, kind = %e.kind, error = %e.message, "MCP tools unavailable");
            let detail = match e.kind.as_str() {
                "McpAuthFailed" => format!("MCP server `{name}` refused the registered token"),
                "McpTimeout" => format!("MCP server `{name}` did not answer in time"),
                "ToolError" | "McpRequestRejected" => {
                    format!("MCP server `{name}` refused to list its tools")
                }
                _ => format!(
                    "MCP server `{name}` could not be reached, or did not answer as an MCP server (streamable HTTP); check its URL"
                ),
            };
            Err(ApiError::new(
                StatusCode::FAILED_DEPENDENCY,
                "mcp-server-unavailable",
                "MCP server unavailable",
                detail,
            ))
        }
    }
}
