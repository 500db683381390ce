//! The GraphQL function: `POST /graphql` (and `GET /graphql` for queries), an Apollo Federation
//! v2 subgraph over the same services as the REST API. The same bearer tokens; errors carry
//! `extensions.code`; depth, cost and alias limits; introspection only when
//! `GRAPHQL_INTROSPECTION` is on, while `_service` (what a gateway composes from) always answers
//! an authenticated caller.

mod context;
mod errors;
mod guard;
mod loaders;
mod money;
mod scalars;
mod schema;
mod types;

use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use axum::body::Bytes;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use shared::auth::{AuthStore, JwtKeys};
use shared::engine::Services;
use shared::http::{ApiError, Authenticated};

pub use guard::{MAX_ALIASES, MAX_QUERY_BYTES};
pub use schema::{sdl, AppSchema, MAX_COMPLEXITY, MAX_DEPTH};

/// How long one document may run.
pub const EXECUTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25);

#[derive(Clone)]
pub struct GraphqlState {
    pub schema: AppSchema,
    pub services: Services,
    pub keys: Arc<JwtKeys>,
    pub introspection: bool,
}

impl FromRef<GraphqlState> for Arc<JwtKeys> {
    fn from_ref(state: &GraphqlState) -> Self {
        state.keys.clone()
    }
}

pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let clients = shared::aws::Clients::new(sdk);
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let services = Services::with_clients(config, clients.clone())?;
    let tables = config.tables().map_err(|e| e.to_string())?;
    let introspection = config.flag("GRAPHQL_INTROSPECTION");
    let allow_private = config
        .engine()
        .map_err(|e| e.to_string())?
        .allow_private_networks;
    let mcp = Arc::new(shared::mcp::McpClients::new(
        config.mcp_registry(&clients).map_err(|e| e.to_string())?,
        allow_private,
        std::time::Duration::from_secs(config.mcp_timeout_secs().map_err(|e| e.to_string())?),
    ));
    let schema = schema::builder(introspection)
        .data(services.clone())
        .data(AuthStore::new(clients.dynamodb(), tables.state.clone()))
        .data(shared::services::usage::Money::new(
            clients.dynamodb(),
            tables.state,
        ))
        .data(mcp)
        .finish();
    let state = GraphqlState {
        schema,
        services,
        keys,
        introspection,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: GraphqlState) -> Router {
    Router::new()
        .route("/graphql", get(over_get).post(over_post))
        .with_state(state)
}

/// A GraphQL answer: 200 with `data` and/or `errors`, as Apollo's gateway expects from a
/// subgraph; a request that is not GraphQL at all is a 400 in the same shape.
fn answer(status: StatusCode, body: &async_graphql::Response) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    answer(
        status,
        &async_graphql::Response::from_errors(vec![errors::coded(code, message)]),
    )
}

async fn over_post(
    State(s): State<GraphqlState>,
    caller: Result<Authenticated, ApiError>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media != "application/json" && media != "application/graphql-response+json" {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            errors::BAD_USER_INPUT,
            "send the request as `Content-Type: application/json`",
        );
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                errors::BAD_USER_INPUT,
                format!("the body is not a GraphQL request: {e}"),
            )
        }
    };
    execute(&s, caller, request, false).await
}

async fn over_get(
    State(s): State<GraphqlState>,
    caller: Result<Authenticated, ApiError>,
    RawQuery(query): RawQuery,
) -> Response {
    let request = match guard::from_query_string(query.as_deref().unwrap_or_default()) {
        Ok(r) => r,
        Err(message) => return refused(StatusCode::BAD_REQUEST, errors::BAD_USER_INPUT, message),
    };
    execute(&s, caller, request, true).await
}

async fn execute(
    s: &GraphqlState,
    caller: Result<Authenticated, ApiError>,
    request: async_graphql::Request,
    over_get: bool,
) -> Response {
    let claims = caller.map(|Authenticated(c)| c);
    let tenant = claims
        .as_ref()
        .map(|c| c.tenant.clone())
        .unwrap_or_else(|_| "anonymous".into());
    let checked = guard::check(&request, s.introspection, claims.is_ok());
    let operation = match &checked {
        Ok(c) => c.operation,
        Err(r) => r.operation,
    };
    let response = match checked {
        Err(refusal) => {
            emit(&tenant, operation, "refused");
            return refused(refusal.status, refusal.code, refusal.message);
        }
        Ok(c) if over_get && c.operation != "query" => {
            emit(&tenant, c.operation, "refused");
            return refused(
                StatusCode::METHOD_NOT_ALLOWED,
                errors::BAD_USER_INPUT,
                "only queries may be sent with GET; send mutations with POST",
            );
        }
        Ok(_) => {
            let owner = claims.as_ref().ok().cloned();
            let loaders = context::Loaders {
                workflows: DataLoader::with_cache(
                    loaders::WorkflowLoader {
                        services: s.services.clone(),
                        claims: owner.clone(),
                    },
                    tokio::spawn,
                    HashMapCache::default(),
                ),
                executions: DataLoader::with_cache(
                    loaders::ExecutionLoader {
                        services: s.services.clone(),
                        claims: owner.clone(),
                    },
                    tokio::spawn,
                    HashMapCache::default(),
                ),
                step_details: DataLoader::with_cache(
                    loaders::StepDetailLoader {
                        services: s.services.clone(),
                        claims: owner,
                    },
                    tokio::spawn,
                    HashMapCache::default(),
                ),
                entities: std::sync::atomic::AtomicUsize::new(0),
            };
            let request = request.data(context::Caller(claims)).data(loaders);
            // Under API Gateway's 30 s: a slow document answers a coded error, not a 503.
            match tokio::time::timeout(EXECUTION_TIMEOUT, s.schema.execute(request)).await {
                Ok(response) => guard::coded(response),
                Err(_) => async_graphql::Response::from_errors(vec![errors::coded(
                    errors::TIMEOUT,
                    format!(
                        "the request ran past {} s; ask for less (fewer items or fields)",
                        EXECUTION_TIMEOUT.as_secs()
                    ),
                )]),
            }
        }
    };
    let outcome = if response.errors.is_empty() {
        "ok"
    } else if response.data == async_graphql::Value::Null {
        "error"
    } else {
        "partial"
    };
    emit(&tenant, operation, outcome);
    answer(StatusCode::OK, &response)
}

/// The seed's `federation_requests_total`, per tenant, operation type and outcome.
fn emit(tenant: &str, operation: &str, outcome: &str) {
    shared::telemetry::metrics::emit(
        "federation_requests_total",
        1.0,
        shared::telemetry::metrics::Unit::Count,
        &[
            ("tenant", tenant),
            ("operation", operation),
            ("outcome", outcome),
        ],
    );
}

#[cfg(test)]
mod tests {
    /// The committed SDL is what gateways and the federation test compose: it must be current.
    #[test]
    fn committed_sdl_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../infra/graphql/schema.graphql"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == crate::sdl(),
            "infra/graphql/schema.graphql is stale; regenerate it with \
             `cargo run -q -p graphql -- --print-sdl > infra/graphql/schema.graphql`"
        );
    }
}
