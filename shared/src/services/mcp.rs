//! The tenant's MCP server registry, and each server's tools (asked of the server).

use axum::http::StatusCode;

use crate::auth::Claims;
use crate::http::{ApiError, ApiResult};
use crate::mcp::{McpClients, McpServer, RegistryError};

use super::users::require_admin;

pub fn registry_error(e: RegistryError) -> ApiError {
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

pub async fn list(clients: &McpClients, claims: &Claims) -> ApiResult<Vec<McpServer>> {
    clients
        .registry()
        .list(&claims.tenant)
        .await
        .map_err(registry_error)
}

pub async fn get(clients: &McpClients, claims: &Claims, name: &str) -> ApiResult<McpServer> {
    clients
        .registry()
        .get(&claims.tenant, name)
        .await
        .map_err(registry_error)
}

/// Registers or replaces server `name` (admins only); `true` when it is new. The token is
/// kept in Secrets Manager and never shown again.
pub async fn register(
    clients: &McpClients,
    allow_private: bool,
    claims: &Claims,
    name: &str,
    url: &str,
    description: Option<String>,
    token: Option<&str>,
) -> ApiResult<(McpServer, bool)> {
    require_admin(claims)?;
    checked_name(name)?;
    crate::engine::http::checked_url(url, allow_private).map_err(|e| {
        ApiError::unprocessable("invalid-server-url", format!("`url`: {}", e.message))
    })?;
    if token.is_some_and(|t| t.trim().is_empty()) {
        return Err(ApiError::unprocessable(
            "invalid-token",
            "`token` is empty; leave it out for a server without auth",
        ));
    }
    let registry = clients.registry();
    let existed = match registry.get(&claims.tenant, name).await {
        Ok(_) => true,
        Err(RegistryError::NotFound(_)) => false,
        Err(e) => return Err(registry_error(e)),
    };
    let server = registry
        .put(
            &claims.tenant,
            name,
            url,
            description,
            token,
            chrono::Utc::now(),
        )
        .await
        .map_err(registry_error)?;
    Ok((server, !existed))
}

pub async fn remove(clients: &McpClients, claims: &Claims, name: &str) -> ApiResult<()> {
    require_admin(claims)?;
    clients
        .registry()
        .delete(&claims.tenant, name)
        .await
        .map_err(registry_error)
}

/// Asks the server for its tools, over the same pooled session steps use. What the server
/// does wrong is a 424 in words a person can act on (the transport's text goes to the log).
pub async fn tools(
    clients: &McpClients,
    claims: &Claims,
    name: &str,
) -> ApiResult<Vec<serde_json::Value>> {
    match clients.list_tools(&claims.tenant, name).await {
        Ok(tools) => Ok(tools),
        Err(e) if e.kind == "McpServerNotRegistered" => Err(ApiError::not_found(e.message)),
        Err(e) if e.kind == "AddressNotAllowed" || e.kind == "InvalidRequest" => {
            Err(ApiError::unprocessable("invalid-server-url", e.message))
        }
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
