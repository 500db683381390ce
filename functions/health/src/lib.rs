//! The health function: `GET /health` (cheap liveness), `GET /health/detailed` (tables ACTIVE,
//! JWT secret readable, migrations at the version this build expects; 503 naming each failing
//! check), and `GET /openapi.json`.

use std::time::Duration;

use aws_sdk_dynamodb::types::TableStatus;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{extract::State, Router};
use serde::Serialize;
use shared::config::{JwtKeySource, Tables};
use shared::migrate::Migrator;

/// The OpenAPI document of every HTTP route, checked against the template and the routers in tests.
pub const OPENAPI: &str = include_str!("../../../infra/openapi.json");

/// Each check gets this long; a dependency that does not answer in time has failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct HealthState {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub tables: Tables,
    pub jwt: Option<JwtKeySource>,
    /// The newest migration built into this version.
    pub expected_migration: u32,
    pub version: String,
    pub cold_start_ms: u128,
    /// Idle time after which the timer's sweep looks at a running execution.
    pub stall_after: chrono::Duration,
    /// The federation gateway to check (`GRAPHQL_GATEWAY_URL`), when one is configured.
    pub gateway: Option<Gateway>,
}

#[derive(Clone)]
pub struct Gateway {
    pub url: url::Url,
    pub client: reqwest::Client,
}

impl Gateway {
    pub fn new(raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("GRAPHQL_GATEWAY_URL {raw:?} is not an http(s) URL"))?;
        let client = shared::tls::reqwest_builder()
            .timeout(GATEWAY_TIMEOUT)
            .connect_timeout(GATEWAY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { url, client })
    }
}

/// Below [`CHECK_TIMEOUT`], so a gateway that accepts and never answers reads as unreachable.
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds the function from config and clients. `started` is when the process started, for the
/// reported cold-start time. Callers are anonymous, so both routes are rate limited per IP (the
/// limiter fails open, so a throttling-store outage still gets an answer).
pub fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
    started: std::time::Instant,
) -> Result<Router, String> {
    let state = HealthState {
        dynamodb: quick_dynamodb(sdk),
        secrets: shared::aws::secretsmanager(sdk),
        tables: config.tables().map_err(|e| e.to_string())?,
        jwt: config.auth().ok().map(|a| a.key),
        expected_migration: migrator::latest_version(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        cold_start_ms: started.elapsed().as_millis(),
        stall_after: chrono::Duration::seconds(
            config.stall_sweep_after_secs().map_err(|e| e.to_string())? as i64,
        ),
        gateway: config
            .gateway_url()
            .as_deref()
            .map(Gateway::new)
            .transpose()?,
    };
    let (limit, window_secs) = config.rate_limit().map_err(|e| e.to_string())?;
    let limiter = shared::http::rate_limit::RateLimiter::new(
        shared::aws::dynamodb(sdk),
        state.tables.state.clone(),
        shared::http::rate_limit::RatePolicy { limit, window_secs },
        std::sync::Arc::new(|_| None),
    );
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "pass"})) }),
        )
        .route("/health/detailed", get(detailed))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: &'static str,
    pub detail: String,
}

async fn timed<F>(name: &'static str, check: F) -> Check
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let (status, detail) = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(detail)) => ("pass", detail),
        Ok(Err(detail)) => ("fail", detail),
        Err(_) => (
            "fail",
            format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
        ),
    };
    Check {
        name,
        status,
        detail,
    }
}

async fn tables(s: &HealthState) -> Result<String, String> {
    for table in [&s.tables.events, &s.tables.state, &s.tables.migrations] {
        let out = s
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| {
                // The AWS error (names, request ids, ARNs) goes to the log, not to the anonymous
                // caller.
                tracing::warn!(table, error = %aws_sdk_dynamodb::error::DisplayErrorContext(e), "health: table check failed");
                "a table cannot be described (see the function's log)".to_owned()
            })?;
        let status = out.table().and_then(|t| t.table_status().cloned());
        if status != Some(TableStatus::Active) {
            tracing::warn!(table, ?status, "health: table not ACTIVE");
            return Err("a table is not ACTIVE (see the function's log)".into());
        }
    }
    Ok("events, state and migrations tables are ACTIVE".into())
}

async fn secret(s: &HealthState) -> Result<String, String> {
    match &s.jwt {
        Some(JwtKeySource::SecretsManager { arn }) => s
            .secrets
            .describe_secret()
            .secret_id(arn)
            .send()
            .await
            .map(|_| "the JWT secret is readable".to_owned())
            .map_err(|e| {
                tracing::warn!(secret = %arn, error = %aws_sdk_secretsmanager::error::DisplayErrorContext(e), "health: secret check failed");
                "the JWT secret cannot be read (see the function's log)".to_owned()
            }),
        Some(JwtKeySource::Secret(_)) => Ok("JWT_SECRET is set".into()),
        None => Err("neither JWT_SECRET nor JWT_SECRET_ARN is set".into()),
    }
}

async fn migrations(s: &HealthState) -> Result<String, String> {
    let ledger = Migrator::new(s.dynamodb.clone(), s.tables.clone())
        .ledger()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "health: migration ledger unreadable");
            "the migration ledger cannot be read (see the function's log)".to_owned()
        })?;
    let applied = ledger.iter().map(|e| e.version).max().unwrap_or(0);
    if applied == s.expected_migration {
        Ok(format!("at version {applied}"))
    } else {
        Err(format!(
            "applied version {applied}, this build expects {}: run the migrator",
            s.expected_migration
        ))
    }
}

/// Executions make progress: none is running idle for twice the sweep's threshold (the stream
/// consumers move executions on, the timer's sweep looks at the idle ones; either stopping shows
/// here as executions left idle).
async fn progress(s: &HealthState) -> Result<String, String> {
    let projections =
        shared::executions::Projections::new(s.dynamodb.clone(), s.tables.state.clone());
    let overdue = s.stall_after * 2;
    let idle = projections
        .idle_since(chrono::Utc::now() - overdue, 1)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "health: progress check failed");
            "running executions cannot be listed (see the function's log)".to_owned()
        })?;
    if idle.is_empty() {
        Ok(format!(
            "no running execution idle for over {} s",
            overdue.num_seconds()
        ))
    } else {
        // No ids: this check answers unauthenticated callers.
        Err(format!(
            "{} or more running executions have been idle for over {} s without the timer's sweep looking at them: the timer function (or the stream consumers) are not making progress",
            idle.len(),
            overdue.num_seconds()
        ))
    }
}

/// The seed's "GraphQL gateway unreachable", with the port to check.
async fn gateway(g: &Gateway) -> Result<String, String> {
    let port = g.url.port_or_known_default().unwrap_or(4000);
    // The URL itself goes to the log only: this answer is public.
    let unreachable = |why: String| {
        tracing::warn!(gateway = %g.url, error = %why, "health: gateway check failed");
        format!(
            "GraphQL gateway unreachable: ensure the graphql-gateway service is running on port \
             {port}: {why}"
        )
    };
    // The gateway's health is at its root, whatever path GRAPHQL_GATEWAY_URL names.
    let mut health = g.url.clone();
    health.set_path("/health");
    health.set_query(None);
    let r = g.client.get(health).send().await.map_err(|e| {
        unreachable(if e.is_timeout() {
            format!("no answer within {} s", GATEWAY_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "the connection was refused or the host is unreachable".to_owned()
        } else {
            e.without_url().to_string()
        })
    })?;
    if r.status().is_success() {
        Ok(format!("the GraphQL gateway on port {port} answers"))
    } else {
        Err(unreachable(format!("GET /health answered {}", r.status())))
    }
}

async fn detailed(State(s): State<HealthState>) -> impl IntoResponse {
    let gateway_check = async {
        match &s.gateway {
            Some(g) => Some(timed("gateway", gateway(g)).await),
            None => None,
        }
    };
    let (t, sec, m, p, g) = tokio::join!(
        timed("dynamodb", tables(&s)),
        timed("secret", secret(&s)),
        timed("migrations", migrations(&s)),
        timed("progress", progress(&s)),
        gateway_check
    );
    let mut checks = vec![t, sec, m, p];
    checks.extend(g);
    let failing: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == "fail")
        .map(|c| c.name)
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if failing.is_empty() { "pass" } else { "fail" },
        "failing": failing,
        "version": s.version,
        "cold_start_ms": s.cold_start_ms,
        "checks": checks,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/health+json")],
        body.to_string(),
    )
}

/// A DynamoDB client for health checks: one attempt, short timeouts, so a dead dependency is
/// reported quickly instead of retried.
pub fn quick_dynamodb(sdk: &shared::aws::SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .operation_timeout(CHECK_TIMEOUT)
                .connect_timeout(Duration::from_secs(1))
                .build(),
        )
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}
