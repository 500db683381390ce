//! The per-tenant registry of MCP servers: a name, the server's streamable-HTTP URL and, when the
//! server wants one, a bearer token. Tokens live in Secrets Manager under
//! `<prefix>/<tenant>/<name>` (never in DynamoDB, never in an API answer); the item keeps the
//! secret's ARN. Tenants name servers, never secrets, so a workflow cannot make the engine send
//! another tenant's or the platform's secret anywhere.
//!
//! Items (state table): `<tenant>#MCP` / `SERVER#<name>`.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the bearer token is kept; `None` for a server without auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_arn: Option<String>,
    /// Changes with every registration, so warm workers drop sessions made with old settings.
    pub revision: String,
    pub updated_at: String,
}

impl McpServer {
    /// What the API shows: everything but where the secret is.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "url": self.url,
            "description": self.description,
            "auth": if self.secret_arn.is_some() { "bearer" } else { "none" },
            "updated_at": self.updated_at,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no MCP server named `{0}` is registered")]
    NotFound(String),
    #[error("MCP registry: {0}")]
    Backend(String),
}

#[derive(Clone)]
pub struct McpRegistry {
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
    table: String,
    secret_prefix: String,
}

fn key(tenant: &str, name: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("{tenant}#MCP"))),
        ("sk".to_owned(), AttributeValue::S(format!("SERVER#{name}"))),
    ])
}

fn backend<E: std::error::Error + 'static>(e: E) -> RegistryError {
    RegistryError::Backend(DisplayErrorContext(e).to_string())
}

impl McpRegistry {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        secrets: aws_sdk_secretsmanager::Client,
        table: String,
        secret_prefix: String,
    ) -> Self {
        Self {
            dynamodb,
            secrets,
            table,
            secret_prefix: secret_prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub async fn get(&self, tenant: &str, name: &str) -> Result<McpServer, RegistryError> {
        crate::aws::get_item(&self.dynamodb, &self.table, key(tenant, name))
            .await
            .map_err(RegistryError::Backend)?
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<McpServer>, RegistryError> {
        let items = crate::aws::query_partition(
            &self.dynamodb,
            &self.table,
            &format!("{tenant}#MCP"),
            Some("SERVER#"),
        )
        .await
        .map_err(RegistryError::Backend)?;
        serde_dynamo::from_items(items).map_err(|e| RegistryError::Backend(e.to_string()))
    }

    /// Registers (or replaces) a server. A token is stored as a secret; without one, a secret
    /// left from an earlier registration is deleted.
    pub async fn put(
        &self,
        tenant: &str,
        name: &str,
        url: &str,
        description: Option<String>,
        token: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<McpServer, RegistryError> {
        let secret_name = format!("{}/{tenant}/{name}", self.secret_prefix);
        let secret_arn = match token {
            Some(token) => Some(self.store_token(&secret_name, token).await?),
            None => {
                self.delete_token(&secret_name).await?;
                None
            }
        };
        let server = McpServer {
            name: name.to_owned(),
            url: url.to_owned(),
            description,
            secret_arn,
            revision: uuid::Uuid::new_v4().to_string(),
            updated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(&server).map_err(|e| RegistryError::Backend(e.to_string()))?;
        item.extend(key(tenant, name));
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(server)
    }

    pub async fn delete(&self, tenant: &str, name: &str) -> Result<(), RegistryError> {
        let server = self.get(tenant, name).await?;
        self.dynamodb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, name)))
            .send()
            .await
            .map_err(backend)?;
        if server.secret_arn.is_some() {
            self.delete_token(&format!("{}/{tenant}/{name}", self.secret_prefix))
                .await?;
        }
        Ok(())
    }

    /// The server's bearer token, read when a session is opened.
    pub async fn token(&self, server: &McpServer) -> Result<Option<String>, RegistryError> {
        let Some(arn) = &server.secret_arn else {
            return Ok(None);
        };
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.secret_string)
    }

    async fn store_token(&self, name: &str, token: &str) -> Result<String, RegistryError> {
        crate::aws::secrets::put(
            &self.secrets,
            name,
            token,
            "Bearer token of a tenant's MCP server (workflow engine registry)",
        )
        .await
        .map_err(RegistryError::Backend)
    }

    async fn delete_token(&self, name: &str) -> Result<(), RegistryError> {
        crate::aws::secrets::delete(&self.secrets, name)
            .await
            .map_err(RegistryError::Backend)
    }
}
