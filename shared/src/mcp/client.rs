//! Calls tools on registered MCP servers over streamable HTTP (rmcp). Sessions are pooled per
//! tenant and server for the life of the process, so a warm Lambda reuses its initialised
//! session instead of paying the handshake on every step; a re-registration (new revision) or a
//! broken transport replaces it. `mcp_connections_active` is reported per tenant as the pool
//! changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Value};

use super::registry::{McpRegistry, McpServer, RegistryError};
use crate::domain::execution::StepError;

type Service = RunningService<RoleClient, ClientConfig>;

struct Session {
    revision: String,
    service: Service,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

pub struct McpClients {
    registry: McpRegistry,
    allow_private: bool,
    timeout: Duration,
    sessions: std::sync::Mutex<HashMap<(String, String), Slot>>,
}

/// Tool text longer than this is cut in error messages (the whole result goes to the output).
const MAX_ERROR_TEXT: usize = 2000;

fn unavailable(server: &str, detail: impl std::fmt::Display) -> StepError {
    StepError::new(
        "McpUnavailable",
        format!("MCP server `{server}`: {detail}"),
        true,
    )
}

impl McpClients {
    pub fn new(registry: McpRegistry, allow_private: bool, timeout: Duration) -> Self {
        Self {
            registry,
            allow_private,
            timeout,
            sessions: Default::default(),
        }
    }

    pub fn registry(&self) -> &McpRegistry {
        &self.registry
    }

    /// Performs a rendered `mcp` step request `{server, tool, arguments}`.
    pub async fn call(&self, tenant: &str, request: &Value) -> Result<Value, StepError> {
        let name = request["server"].as_str().unwrap_or_default();
        let tool = request["tool"].as_str().unwrap_or_default().to_owned();
        let arguments = match &request["arguments"] {
            Value::Object(map) => map.clone(),
            Value::Null => Default::default(),
            _ => {
                return Err(StepError::new(
                    "InvalidRequest",
                    "the tool's arguments must render to an object",
                    false,
                ))
            }
        };
        let server = self.server(tenant, name).await?;
        let session = self.session(tenant, &server).await?;
        let params = CallToolRequestParams::new(tool.clone()).with_arguments(arguments);
        let result =
            match tokio::time::timeout(self.timeout, session.service.call_tool(params)).await {
                Err(_) => {
                    return Err(StepError::new(
                        "McpTimeout",
                        format!(
                            "tool `{tool}` on `{name}` did not answer within {} s",
                            self.timeout.as_secs()
                        ),
                        true,
                    ))
                }
                Ok(Err(ServiceError::McpError(e))) => {
                    return Err(StepError::new(
                        "McpRequestRejected",
                        format!("`{name}` refused the call to `{tool}`: {}", e.message),
                        false,
                    ))
                }
                Ok(Err(e)) => {
                    // The session may be gone on the server's side: the next call opens a new one.
                    self.forget(tenant, name, &session.revision).await;
                    return Err(unavailable(name, e));
                }
                Ok(Ok(result)) => result,
            };
        let text: Vec<String> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        let text = text.join("\n");
        if result.is_error == Some(true) {
            let mut message = text.clone();
            if message.len() > MAX_ERROR_TEXT {
                let cut = (0..=MAX_ERROR_TEXT)
                    .rev()
                    .find(|i| message.is_char_boundary(*i))
                    .unwrap_or(0);
                message.truncate(cut);
                message.push('…');
            }
            return Err(StepError::new(
                "ToolError",
                format!("tool `{tool}` on `{name}` failed: {message}"),
                false,
            ));
        }
        let output = json!({
            "text": text,
            "content": result.content,
            "structured": result.structured_content,
        });
        // The same cap as an HTTP step's response: a tool's answer does not bloat the history.
        let bytes = serde_json::to_vec(&output).map_or(usize::MAX, |v| v.len());
        if bytes > crate::engine::http::MAX_RESPONSE_BYTES {
            return Err(StepError::new(
                "ResponseTooLarge",
                format!(
                    "tool `{tool}` on `{name}` answered {bytes} bytes; at most {} KB are kept",
                    crate::engine::http::MAX_RESPONSE_BYTES / 1024
                ),
                false,
            ));
        }
        Ok(output)
    }

    /// The tools a registered server offers (name, description, input schema).
    pub async fn list_tools(&self, tenant: &str, name: &str) -> Result<Vec<Value>, StepError> {
        let server = self.server(tenant, name).await?;
        let session = self.session(tenant, &server).await?;
        match tokio::time::timeout(self.timeout, session.service.list_all_tools()).await {
            Err(_) => Err(StepError::new(
                "McpTimeout",
                format!("`{name}` did not list its tools in time"),
                true,
            )),
            Ok(Err(e)) => {
                self.forget(tenant, name, &session.revision).await;
                Err(unavailable(name, e))
            }
            Ok(Ok(tools)) => Ok(tools
                .into_iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "description": t.description,
                        "input_schema": t.input_schema,
                    })
                })
                .collect()),
        }
    }

    async fn server(&self, tenant: &str, name: &str) -> Result<McpServer, StepError> {
        self.registry.get(tenant, name).await.map_err(|e| match e {
            RegistryError::NotFound(_) => {
                StepError::new("McpServerNotRegistered", e.to_string(), false)
            }
            RegistryError::Backend(_) => StepError::new("McpUnavailable", e.to_string(), true),
        })
    }

    fn slot(&self, tenant: &str, name: &str) -> Slot {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry((tenant.to_owned(), name.to_owned()))
            .or_default()
            .clone()
    }

    /// The pooled session for this server, opened (or reopened after a re-registration) here.
    async fn session(&self, tenant: &str, server: &McpServer) -> Result<Arc<Session>, StepError> {
        let slot = self.slot(tenant, &server.name);
        let mut current = slot.lock().await;
        if let Some(session) = current.as_ref() {
            if session.revision == server.revision && !session.service.is_closed() {
                return Ok(session.clone());
            }
        }
        let replaced = current.take();
        let session = Arc::new(self.open(server).await?);
        *current = Some(session.clone());
        drop(current);
        if replaced.is_none() {
            self.report(tenant);
        }
        Ok(session)
    }

    async fn open(&self, server: &McpServer) -> Result<Session, StepError> {
        let name = &server.name;
        let url = crate::engine::http::checked_url(&server.url, self.allow_private)?;
        let token = self
            .registry
            .token(server)
            .await
            .map_err(|e| unavailable(name, e))?;
        let http = crate::engine::http::guarded_client(self.allow_private)
            .build()
            .map_err(|e| unavailable(name, e))?;
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
        if let Some(token) = token {
            config = config.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::with_client(http, config);
        let client = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("workflow-engine", env!("CARGO_PKG_VERSION")),
        );
        let service = match tokio::time::timeout(self.timeout, client.serve(transport)).await {
            Err(_) => return Err(unavailable(name, "no answer to initialize in time")),
            // Retrying with the same token cannot help: the registration has to change.
            Ok(Err(e)) if e.is_authorization_required() => {
                return Err(StepError::new(
                    "McpAuthFailed",
                    format!("MCP server `{name}` refused the registered credentials"),
                    false,
                ))
            }
            Ok(Err(e)) => return Err(unavailable(name, e)),
            Ok(Ok(service)) => service,
        };
        tracing::info!(server = %name, "MCP session opened");
        Ok(Session {
            revision: server.revision.clone(),
            service,
        })
    }

    async fn forget(&self, tenant: &str, name: &str, revision: &str) {
        let slot = self.slot(tenant, name);
        let mut current = slot.lock().await;
        if current.as_ref().is_some_and(|s| s.revision == revision) {
            current.take();
            drop(current);
            self.report(tenant);
        }
    }

    /// Open sessions of one tenant in this process.
    pub fn active(&self, tenant: &str) -> usize {
        let slots: Vec<Slot> = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions
                .iter()
                .filter(|((t, _), _)| t == tenant)
                .map(|(_, slot)| slot.clone())
                .collect()
        };
        slots
            .iter()
            .filter(|slot| slot.try_lock().map(|s| s.is_some()).unwrap_or(true))
            .count()
    }

    fn report(&self, tenant: &str) {
        crate::telemetry::metrics::emit(
            "mcp_connections_active",
            self.active(tenant) as f64,
            crate::telemetry::metrics::Unit::Count,
            &[("tenant", tenant)],
        );
    }
}
