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
use shared::http::{Admin, ApiResult, Authenticated, Json};
use shared::mcp::McpClients;
use shared::services::mcp as service;

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
    let clients = shared::aws::Clients::new(sdk);
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let allow_private = config
        .engine()
        .map_err(|e| e.to_string())?
        .allow_private_networks;
    let timeout = config.mcp_timeout_secs().map_err(|e| e.to_string())?;
    let state = McpState {
        clients: Arc::new(McpClients::new(
            config.mcp_registry(&clients).map_err(|e| e.to_string())?,
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

async fn list(
    State(s): State<McpState>,
    Authenticated(claims): Authenticated,
) -> ApiResult<Json<Value>> {
    let servers = service::list(&s.clients, &claims).await?;
    Ok(Json(json!({
        "servers": servers.iter().map(|s| s.view()).collect::<Vec<_>>()
    })))
}

async fn read(
    State(s): State<McpState>,
    Authenticated(claims): Authenticated,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let server = service::get(&s.clients, &claims, &name).await?;
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
    let (server, created) = service::register(
        &s.clients,
        s.allow_private,
        &claims,
        &name,
        &req.url,
        req.description,
        req.token.as_deref(),
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(server.view())))
}

async fn remove(
    State(s): State<McpState>,
    Admin(claims): Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    service::remove(&s.clients, &claims, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the server for its tools, over the same pooled session steps use.
async fn tools(
    State(s): State<McpState>,
    Authenticated(claims): Authenticated,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let tools = service::tools(&s.clients, &claims, &name).await?;
    Ok(Json(json!({"server": name, "tools": tools})))
}
