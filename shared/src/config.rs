//! Typed configuration, read once at cold start. Sources, strongest first: environment variables,
//! then the TOML file named by `CONFIG_FILE` (sections `[server]`, `[database]`, `[auth]`,
//! `[federation]` as in the seed), then defaults. Secrets have no defaults: a missing one stops
//! start-up with the seed's message, e.g. `Error: Environment variable JWT_SECRET is required`.

use std::collections::HashMap;

use serde::Deserialize;

/// Shortest accepted HMAC secret: 256 bits, the HS256 key size.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("Environment variable {0} is required")]
    Missing(&'static str),
    #[error("Environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("Config file {path} could not be read: {reason}")]
    File { path: String, reason: String },
}

impl ConfigError {
    /// Prints the seed's `Error: ...` line and exits: the fail-fast path of every `main`.
    pub fn exit(&self) -> ! {
        eprintln!("Error: {self}");
        std::process::exit(1)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileConfig {
    server: FileServer,
    database: FileDatabase,
    auth: FileAuth,
    federation: FileFederation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileServer {
    host: Option<String>,
    port: Option<u16>,
    cors_origins: Option<Vec<String>>,
}

/// The seed's `url` and `pool_size` have no meaning for DynamoDB and are accepted but unused.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileDatabase {
    events_table: Option<String>,
    state_table: Option<String>,
    migrations_table: Option<String>,
    timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileAuth {
    jwt_secret: Option<String>,
    jwt_secret_arn: Option<String>,
    token_expiration: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileFederation {
    gateway_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub cors_origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub events: String,
    pub state: String,
    pub migrations: String,
}

/// Where the JWT signing key comes from. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeySource {
    Secret(String),
    SecretsManager { arn: String },
}

impl std::fmt::Debug for JwtKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::SecretsManager { arn } => write!(f, "SecretsManager({arn})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub key: JwtKeySource,
    pub token_expiration_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub allow_private_networks: bool,
    pub http_timeout_secs: u64,
    /// `SUBWORKFLOW_MAX_DEPTH` (default 5, 1..=10): how deep subworkflows nest.
    pub subworkflow_max_depth: u32,
    /// `SUBWORKFLOW_MAX_DESCENDANTS` (default 1000, 1..=100000): child executions one top-level
    /// execution may start, at every depth together.
    pub subworkflow_max_descendants: u32,
}

/// All settings, merged; each function asks only for the parts it needs.
#[derive(Debug)]
pub struct Config {
    env: HashMap<String, String>,
    file: FileConfig,
}

/// The process's environment, without the variables that are not Unicode (`std::env::vars`
/// panics on those; none of ours can be one).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
}

impl Config {
    /// Reads the process environment and, if `CONFIG_FILE` is set, that TOML file.
    pub fn load() -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = process_env().collect();
        let file = match env.get("CONFIG_FILE") {
            Some(path) => Some(
                std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            ),
            None => None,
        };
        Self::from_sources(env, file.as_deref())
    }

    /// Pure constructor for tests: an environment and an optional TOML document.
    pub fn from_sources(
        env: HashMap<String, String>,
        toml_text: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let file = match toml_text {
            Some(text) => toml::from_str(text).map_err(|e| ConfigError::File {
                path: env.get("CONFIG_FILE").cloned().unwrap_or_default(),
                reason: e.to_string(),
            })?,
            None => FileConfig::default(),
        };
        Ok(Self { env, file })
    }

    /// An environment variable, or the file's value; `${VAR}` in the file (the seed's
    /// `jwt_secret = "${JWT_SECRET}"`) is resolved from the environment. Empty means unset.
    fn pick(&self, name: &str, file_value: Option<&String>) -> Option<String> {
        let from_file =
            file_value.and_then(
                |v| match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                    Some(var) => self.env.get(var).cloned(),
                    None => Some(v.clone()),
                },
            );
        self.env
            .get(name)
            .cloned()
            .or(from_file)
            .filter(|v| !v.trim().is_empty())
    }

    fn required(
        &self,
        name: &'static str,
        file_value: Option<&String>,
    ) -> Result<String, ConfigError> {
        self.pick(name, file_value)
            .ok_or(ConfigError::Missing(name))
    }

    fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
        file_value: Option<T>,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.env.get(name).filter(|v| !v.trim().is_empty()) {
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("{raw:?} is not a valid number"),
            }),
            None => Ok(file_value.unwrap_or(default)),
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        self.env
            .get(name)
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    }

    pub fn server(&self) -> Result<ServerConfig, ConfigError> {
        let s = &self.file.server;
        let cors_origins = match self.env.get("CORS_ORIGINS") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
            None => s.cors_origins.clone().unwrap_or_default(),
        };
        if let Some(bad) = cors_origins.iter().find(|o| o.as_str() == "*") {
            return Err(ConfigError::Invalid {
                name: "CORS_ORIGINS",
                reason: format!(
                    "{bad:?} is not allowed: list the origins that may send credentials"
                ),
            });
        }
        Ok(ServerConfig {
            host: self
                .pick("HOST", s.host.as_ref())
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
            port: self.number("PORT", s.port, 8080)?,
            cors_origins,
        })
    }

    pub fn tables(&self) -> Result<Tables, ConfigError> {
        let d = &self.file.database;
        Ok(Tables {
            events: self.required("EVENTS_TABLE", d.events_table.as_ref())?,
            state: self.required("STATE_TABLE", d.state_table.as_ref())?,
            migrations: self.required("MIGRATIONS_TABLE", d.migrations_table.as_ref())?,
        })
    }

    /// DynamoDB request timeout in seconds (`[database] timeout`, default 30).
    pub fn database_timeout_secs(&self) -> Result<u64, ConfigError> {
        self.number("DATABASE_TIMEOUT", self.file.database.timeout, 30)
    }

    pub fn auth(&self) -> Result<AuthConfig, ConfigError> {
        let a = &self.file.auth;
        let token_expiration_secs = self.number("TOKEN_EXPIRATION", a.token_expiration, 3600)?;
        if token_expiration_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "TOKEN_EXPIRATION",
                reason: "must be at least 1 second".into(),
            });
        }
        let key = match self.pick("JWT_SECRET_ARN", a.jwt_secret_arn.as_ref()) {
            Some(arn) => JwtKeySource::SecretsManager { arn },
            None => {
                let secret = self.required("JWT_SECRET", a.jwt_secret.as_ref())?;
                if secret.len() < MIN_JWT_SECRET_BYTES {
                    return Err(ConfigError::Invalid {
                        name: "JWT_SECRET",
                        reason: format!(
                            "it is {} bytes long; use at least {MIN_JWT_SECRET_BYTES} random bytes",
                            secret.len()
                        ),
                    });
                }
                JwtKeySource::Secret(secret)
            }
        };
        Ok(AuthConfig {
            key,
            token_expiration_secs,
        })
    }

    /// Requests per principal per window (`RATE_LIMIT_REQUESTS`, default 300) and the window
    /// (`RATE_LIMIT_WINDOW_SECS`, default 60).
    pub fn rate_limit(&self) -> Result<(u32, u64), ConfigError> {
        let limit = self.number("RATE_LIMIT_REQUESTS", None, 300)?;
        let window = self.number("RATE_LIMIT_WINDOW_SECS", None, 60)?;
        if limit == 0 || window == 0 {
            return Err(ConfigError::Invalid {
                name: "RATE_LIMIT_REQUESTS",
                reason: "limit and window must both be at least 1".into(),
            });
        }
        Ok((limit, window))
    }

    /// Refresh-token lifetime in seconds (`REFRESH_TOKEN_EXPIRATION`, default 30 days).
    pub fn refresh_token_expiration_secs(&self) -> Result<u64, ConfigError> {
        self.number("REFRESH_TOKEN_EXPIRATION", None, 30 * 24 * 3600)
    }

    /// Step execution settings: whether `http` steps may call private, loopback and link-local
    /// addresses (`HTTP_ALLOW_PRIVATE_NETWORKS`, default no) and their request timeout
    /// (`HTTP_STEP_TIMEOUT` seconds, default 30).
    pub fn engine(&self) -> Result<EngineConfig, ConfigError> {
        let bounded = |name: &'static str, default: u32, max: u32| -> Result<u32, ConfigError> {
            let n = self.number(name, None, default)?;
            if !(1..=max).contains(&n) {
                return Err(ConfigError::Invalid {
                    name,
                    reason: format!("{n} is outside 1..={max}"),
                });
            }
            Ok(n)
        };
        Ok(EngineConfig {
            allow_private_networks: self.flag("HTTP_ALLOW_PRIVATE_NETWORKS"),
            http_timeout_secs: self.number("HTTP_STEP_TIMEOUT", None, 30)?,
            subworkflow_max_depth: bounded("SUBWORKFLOW_MAX_DEPTH", 5, 10)?,
            subworkflow_max_descendants: bounded("SUBWORKFLOW_MAX_DESCENDANTS", 1000, 100_000)?,
        })
    }

    /// A plain optional setting from the environment.
    pub fn value(&self, name: &str) -> Option<String> {
        self.env.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }

    /// How old a budget reservation must be before the sweep settles it from its step's recorded
    /// outcome (`HOLD_SWEEP_GRACE_SECS`, default 1800: longer than any Lambda invocation, so no
    /// attempt still in flight is touched).
    pub fn hold_sweep_grace_secs(&self) -> Result<u64, ConfigError> {
        let secs = self.number("HOLD_SWEEP_GRACE_SECS", None, 1800)?;
        // Shorter than an invocation would release money a live call still holds (its spend then
        // never counted); a month is the longest a reservation may be left unsettled.
        if !(960..=30 * 24 * 3600).contains(&secs) {
            return Err(ConfigError::Invalid {
                name: "HOLD_SWEEP_GRACE_SECS",
                reason: format!("{secs} is outside 960..=2592000 seconds (it must outlast any Lambda invocation)"),
            });
        }
        Ok(secs)
    }

    /// How long a process trusts what it read of a user's token version and status
    /// (`TOKEN_REVOCATION_CACHE_SECS`, default 30, at most 300): a revoked access token stops
    /// working within this time.
    pub fn token_revocation_cache_secs(&self) -> Result<u64, ConfigError> {
        let secs = self.number("TOKEN_REVOCATION_CACHE_SECS", None, 30)?;
        if secs > 300 {
            return Err(ConfigError::Invalid {
                name: "TOKEN_REVOCATION_CACHE_SECS",
                reason: format!("{secs} is more than 300 seconds"),
            });
        }
        Ok(secs)
    }

    /// How long a running execution may make no progress before the sweep looks at it
    /// (`STALL_SWEEP_AFTER_SECS`, default 900, at least 60).
    pub fn stall_sweep_after_secs(&self) -> Result<u64, ConfigError> {
        let secs = self.number("STALL_SWEEP_AFTER_SECS", None, 900)?;
        if !(60..=30 * 24 * 3600).contains(&secs) {
            return Err(ConfigError::Invalid {
                name: "STALL_SWEEP_AFTER_SECS",
                reason: format!("{secs} is outside 60..=2592000 seconds"),
            });
        }
        Ok(secs)
    }

    /// Seconds an LLM provider call may take (`LLM_TIMEOUT`, default 120).
    pub fn llm_timeout_secs(&self) -> Result<u64, ConfigError> {
        self.number("LLM_TIMEOUT", None, 120)
    }

    /// Seconds an MCP handshake or tool call may take (`MCP_TIMEOUT`, default 60).
    pub fn mcp_timeout_secs(&self) -> Result<u64, ConfigError> {
        self.number("MCP_TIMEOUT", None, crate::mcp::DEFAULT_TIMEOUT_SECS)
    }

    /// Where MCP server tokens are kept in Secrets Manager (`MCP_SECRET_PREFIX`, default
    /// `workflow-engine/mcp`; the template sets `<stack>/mcp`, which its policies cover).
    pub fn mcp_secret_prefix(&self) -> String {
        self.value("MCP_SECRET_PREFIX")
            .unwrap_or_else(|| "workflow-engine/mcp".to_owned())
    }

    /// The MCP server registry on this deployment's state table.
    pub fn mcp_registry(
        &self,
        clients: &crate::aws::Clients,
    ) -> Result<crate::mcp::McpRegistry, ConfigError> {
        Ok(crate::mcp::McpRegistry::new(
            clients.dynamodb(),
            clients.secrets(),
            self.tables()?.state,
            self.mcp_secret_prefix(),
        ))
    }

    /// Where tenants' secrets are kept in Secrets Manager (`TENANT_SECRET_PREFIX`, default
    /// `workflow-engine/tenant`; the template sets `<stack>/tenant`, which its policies cover).
    pub fn tenant_secret_prefix(&self) -> String {
        self.value("TENANT_SECRET_PREFIX")
            .unwrap_or_else(|| "workflow-engine/tenant".to_owned())
    }

    /// Tenants' secrets on this deployment's state table and Secrets Manager.
    pub fn tenant_secrets(
        &self,
        clients: &crate::aws::Clients,
    ) -> Result<crate::secrets::TenantSecrets, ConfigError> {
        Ok(crate::secrets::TenantSecrets::new(
            clients.dynamodb(),
            clients.secrets(),
            self.tables()?.state,
            self.tenant_secret_prefix(),
        ))
    }

    /// A provider's key: `<PREFIX>_API_KEY_ARN` (read from Secrets Manager on first use, see
    /// [`crate::engine::llm::key::KeyCell`]) or `<PREFIX>_API_KEY`; `None` when neither is set
    /// (the provider is not configured).
    pub fn provider_key(
        &self,
        prefix: &str,
        clients: &crate::aws::Clients,
    ) -> Option<crate::engine::llm::key::KeyCell> {
        use crate::engine::llm::{key::KeyCell, ApiKey};
        let variable = format!("{prefix}_API_KEY_ARN");
        if let Some(arn) = self.value(&variable) {
            return Some(KeyCell::secret(variable, arn, clients.secrets()));
        }
        self.value(&format!("{prefix}_API_KEY"))
            .map(|key| KeyCell::value(ApiKey::new(key)))
    }

    pub fn gateway_url(&self) -> Option<String> {
        self.pick(
            "GRAPHQL_GATEWAY_URL",
            self.file.federation.gateway_url.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_jwt_secret_uses_the_seed_message() {
        let err = Config::from_sources(env(&[]), None)
            .unwrap()
            .auth()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Environment variable JWT_SECRET is required"
        );
    }

    #[test]
    fn short_jwt_secret_is_refused_without_echoing_it() {
        let err = Config::from_sources(env(&[("JWT_SECRET", "short-secret")]), None)
            .unwrap()
            .auth()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("JWT_SECRET") && text.contains("12 bytes"),
            "{text}"
        );
        assert!(!text.contains("short-secret"));
    }

    #[test]
    fn file_values_apply_and_env_overrides_them() {
        let toml = r#"
            [server]
            host = "0.0.0.0"
            port = 8080
            cors_origins = ["http://localhost:3000"]
            [database]
            url = "postgresql://ignored"
            pool_size = 10
            events_table = "file-events"
            state_table = "file-state"
            migrations_table = "file-migrations"
            [auth]
            jwt_secret = "${JWT_SECRET}"
            token_expiration = 600
        "#;
        let secret = "0123456789abcdef0123456789abcdef";
        let cfg = Config::from_sources(
            env(&[
                ("JWT_SECRET", secret),
                ("PORT", "9000"),
                ("STATE_TABLE", "env-state"),
            ]),
            Some(toml),
        )
        .unwrap();
        let server = cfg.server().unwrap();
        assert_eq!(server.host, "0.0.0.0");
        assert_eq!(server.port, 9000);
        assert_eq!(server.cors_origins, vec!["http://localhost:3000"]);
        let tables = cfg.tables().unwrap();
        assert_eq!(tables.events, "file-events");
        assert_eq!(tables.state, "env-state");
        let auth = cfg.auth().unwrap();
        assert_eq!(auth.key, JwtKeySource::Secret(secret.into()));
        assert_eq!(auth.token_expiration_secs, 600);
        assert!(
            !format!("{auth:?}").contains(secret),
            "Debug redacts the secret"
        );
    }

    #[test]
    fn file_reference_to_unset_variable_is_missing() {
        let cfg =
            Config::from_sources(env(&[]), Some("[auth]\njwt_secret = \"${JWT_SECRET}\"")).unwrap();
        assert_eq!(cfg.auth().unwrap_err(), ConfigError::Missing("JWT_SECRET"));
    }

    #[test]
    fn defaults_and_bad_numbers() {
        let cfg = Config::from_sources(env(&[("TOKEN_EXPIRATION", "soon")]), None).unwrap();
        assert_eq!(cfg.server().unwrap().port, 8080);
        assert!(cfg
            .auth()
            .unwrap_err()
            .to_string()
            .contains("TOKEN_EXPIRATION"));
        assert_eq!(
            cfg.tables().unwrap_err(),
            ConfigError::Missing("EVENTS_TABLE")
        );
        let wildcard = Config::from_sources(env(&[("CORS_ORIGINS", "*")]), None).unwrap();
        assert!(wildcard.server().is_err());
    }

    #[test]
    fn secrets_manager_arn_takes_precedence() {
        let cfg =
            Config::from_sources(env(&[("JWT_SECRET_ARN", "arn:aws:secretsmanager:x")]), None)
                .unwrap();
        assert!(matches!(
            cfg.auth().unwrap().key,
            JwtKeySource::SecretsManager { .. }
        ));
    }
}
