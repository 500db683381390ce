//! A tenant's secrets: values steps send (`${secret:NAME}` in http headers and mcp arguments,
//! see [`crate::domain::secret_ref`]), kept in Secrets Manager under
//! `<TENANT_SECRET_PREFIX>/<tenant>/<name>`. The API writes and deletes them but never reads a
//! value back (its IAM policy cannot); the worker reads them at call time.
//!
//! Metadata (state table, `<tenant>#SECRET` / `SECRET#<name>`): name, description, when it was
//! created and last set, and how many times. It is what listings show.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

/// The longest value a secret may hold, in characters (headers and tokens, not files).
pub const MAX_VALUE_CHARS: usize = 8 * 1024;
/// The most secrets one tenant may keep (each one is a Secrets Manager secret: a monthly cost
/// and part of the account's quota every tenant shares).
pub const MAX_SECRETS_PER_TENANT: usize = 100;
/// How long a worker keeps a value it read: a changed secret is used within this time.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Times the value was set; a changed secret shows a new version.
    pub version: u64,
    /// Hosts an http step may send the secret to (exact names, case-insensitive).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// MCP servers (registry names) an mcp step may send the secret to.
    #[serde(default)]
    pub mcp_servers: Vec<String>,
}

/// Where a step is about to send a secret.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    Host(&'a str),
    McpServer(&'a str),
}

impl SecretInfo {
    /// Whether the admin who set the secret allowed it to go to `to`: a workflow author can
    /// name a secret, but not send it anywhere else.
    pub fn allows(&self, to: Destination<'_>) -> bool {
        match to {
            Destination::Host(host) => {
                let host = host.trim_end_matches('.');
                self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            }
            Destination::McpServer(name) => self.mcp_servers.iter().any(|s| s == name),
        }
    }
}

/// A secret as the worker uses it.
#[derive(Clone)]
pub struct Resolved {
    pub value: String,
    pub info: SecretInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no secret named `{0}` is set")]
    NotFound(String),
    #[error("a tenant keeps at most {MAX_SECRETS_PER_TENANT} secrets; delete one first")]
    TooMany,
    #[error("secret `{0}` was just deleted and cannot be set again yet; retry in a minute")]
    RecentlyDeleted(String),
    #[error("secrets: {0}")]
    Backend(String),
}

pub struct TenantSecrets {
    dynamodb: aws_sdk_dynamodb::Client,
    secrets: aws_sdk_secretsmanager::Client,
    table: String,
    prefix: String,
    cache: Mutex<HashMap<(String, String), (Instant, Resolved)>>,
}

fn key(tenant: &str, name: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("{tenant}#SECRET")),
        ),
        ("sk".to_owned(), AttributeValue::S(format!("SECRET#{name}"))),
    ])
}

fn backend<E: std::error::Error + 'static>(e: E) -> SecretError {
    SecretError::Backend(DisplayErrorContext(e).to_string())
}

impl TenantSecrets {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        secrets: aws_sdk_secretsmanager::Client,
        table: String,
        prefix: String,
    ) -> Self {
        Self {
            dynamodb,
            secrets,
            table,
            prefix: prefix.trim_end_matches('/').to_owned(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Where the value is kept. Tenant ids and secret names cannot hold `/`, so no two
    /// (tenant, name) pairs share a secret.
    fn secret_id(&self, tenant: &str, name: &str) -> Result<String, SecretError> {
        if tenant.contains('/') || !crate::domain::secret_ref::valid_name(name) {
            return Err(SecretError::NotFound(name.to_owned()));
        }
        Ok(format!("{}/{tenant}/{name}", self.prefix))
    }

    pub async fn get(&self, tenant: &str, name: &str) -> Result<SecretInfo, SecretError> {
        crate::aws::get_item(&self.dynamodb, &self.table, key(tenant, name))
            .await
            .map_err(SecretError::Backend)?
            .ok_or_else(|| SecretError::NotFound(name.to_owned()))
    }

    pub async fn list(&self, tenant: &str) -> Result<Vec<SecretInfo>, SecretError> {
        let items = crate::aws::query_partition(
            &self.dynamodb,
            &self.table,
            &format!("{tenant}#SECRET"),
            Some("SECRET#"),
        )
        .await
        .map_err(SecretError::Backend)?;
        serde_dynamo::from_items(items).map_err(|e| SecretError::Backend(e.to_string()))
    }

    /// Sets a secret's value (creating it the first time). The value goes to Secrets Manager
    /// first, so metadata never names a secret that is not there. Returns the metadata and
    /// whether the secret is new.
    pub async fn put(
        &self,
        tenant: &str,
        name: &str,
        value: &str,
        description: Option<String>,
        allowed: Option<(Vec<String>, Vec<String>)>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(SecretInfo, bool), SecretError> {
        let id = self.secret_id(tenant, name)?;
        let previous = match self.get(tenant, name).await {
            Ok(info) => Some(info),
            Err(SecretError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // Checked by count, not atomically: concurrent first PUTs may pass it together, which
        // bounds the excess by the admin's own concurrency.
        if previous.is_none() && self.list(tenant).await?.len() >= MAX_SECRETS_PER_TENANT {
            return Err(SecretError::TooMany);
        }
        crate::aws::secrets::put(
            &self.secrets,
            &id,
            value,
            "A tenant's secret for workflow steps (workflow engine)",
        )
        .await
        .map_err(|e| {
            // Secrets Manager deletes in the background; the name is busy until it is done.
            if e.contains("scheduled for deletion") || e.contains("marked for deletion") {
                SecretError::RecentlyDeleted(name.to_owned())
            } else {
                SecretError::Backend(e)
            }
        })?;
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (hosts, mcp_servers) = match (allowed, &previous) {
            (Some(a), _) => a,
            (None, Some(p)) => (p.hosts.clone(), p.mcp_servers.clone()),
            (None, None) => (Vec::new(), Vec::new()),
        };
        let info = SecretInfo {
            hosts,
            mcp_servers,
            name: name.to_owned(),
            description: description.or_else(|| previous.as_ref()?.description.clone()),
            created_at: previous
                .as_ref()
                .map_or_else(|| at.clone(), |p| p.created_at.clone()),
            updated_at: at,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
        };
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(&info).map_err(|e| SecretError::Backend(e.to_string()))?;
        item.extend(key(tenant, name));
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        self.forget(tenant, name);
        Ok((info, previous.is_none()))
    }

    /// Deletes a secret: its value at once (no recovery window), then its metadata.
    pub async fn delete(&self, tenant: &str, name: &str) -> Result<(), SecretError> {
        let id = self.secret_id(tenant, name)?;
        if let Err(e) = self.get(tenant, name).await {
            if matches!(e, SecretError::NotFound(_)) {
                // A value whose metadata write failed is not left behind.
                let _ = crate::aws::secrets::delete(&self.secrets, &id).await;
            }
            return Err(e);
        }
        crate::aws::secrets::delete(&self.secrets, &id)
            .await
            .map_err(SecretError::Backend)?;
        self.dynamodb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, name)))
            .send()
            .await
            .map_err(backend)?;
        self.forget(tenant, name);
        Ok(())
    }

    fn forget(&self, tenant: &str, name: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&(tenant.to_owned(), name.to_owned()));
        }
    }

    /// A tenant's secret with where it may go, for the worker; `None` when it is not set.
    /// Kept for [`CACHE_TTL`] per warm worker.
    pub async fn resolve(&self, tenant: &str, name: &str) -> Result<Option<Resolved>, SecretError> {
        let cache_key = (tenant.to_owned(), name.to_owned());
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, found)) = cache.get(&cache_key) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(Some(found.clone()));
                }
            }
        }
        let info = match self.get(tenant, name).await {
            Ok(info) => info,
            Err(SecretError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = self.secret_id(tenant, name)?;
        let Some(value) = crate::aws::secrets::get(&self.secrets, &id)
            .await
            .map_err(SecretError::Backend)?
        else {
            return Ok(None);
        };
        let found = Resolved { value, info };
        // Only found secrets are kept: one set after a step failed for want of it is used by
        // the step's next attempt.
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(cache_key, (Instant::now(), found.clone()));
        }
        Ok(Some(found))
    }
}
