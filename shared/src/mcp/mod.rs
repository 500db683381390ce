//! MCP tools for `mcp` steps: the per-tenant server registry and pooled client sessions.

pub mod client;
pub mod registry;

pub use client::McpClients;
pub use registry::{McpRegistry, McpServer, RegistryError};

/// Seconds an MCP handshake or tool call may take (`MCP_TIMEOUT`, default 60).
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
