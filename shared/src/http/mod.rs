//! HTTP conventions shared by every HTTP function: problem+json errors, JSON bodies that say
//! what is wrong, body limits, CORS, request and correlation ids, rate limiting, metrics, and one
//! `serve` that runs under Lambda or as a local server.

pub mod bearer;
mod context;
pub mod cors;
mod json;
mod problem;
pub mod rate_limit;
pub mod request_id;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

pub use bearer::{Admin, Authenticated};
pub use context::client_ip;
pub use json::{checked_value as storable, parse as parse_json, Document, Json};
pub use problem::ApiError;
pub use rate_limit::{Principal, RateLimiter, RatePolicy};

/// Largest accepted request body. API Gateway caps payloads at 10 MB; workflows and inputs are far
/// smaller, and a small cap keeps a hostile body from costing memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every authenticated function sets up at cold start: the JWT keys (from the environment,
/// or read from Secrets Manager in the background) and the rate limiter that identifies callers
/// by them.
pub async fn authenticated(
    config: &crate::config::Config,
    clients: &crate::aws::Clients,
) -> Result<(std::sync::Arc<crate::auth::JwtKeys>, RateLimiter), String> {
    let auth = config.auth().map_err(|e| e.to_string())?;
    let tables = config.tables().map_err(|e| e.to_string())?;
    let sessions = crate::auth::Sessions::new(
        crate::auth::AuthStore::new(clients.dynamodb(), tables.state),
        std::time::Duration::from_secs(
            config
                .token_revocation_cache_secs()
                .map_err(|e| e.to_string())?,
        ),
    );
    let keys = std::sync::Arc::new(
        crate::auth::keys::load(&auth.key, clients)?.with_sessions(std::sync::Arc::new(sessions)),
    );
    // Keys from Secrets Manager: the read starts now and runs while the runtime asks for the
    // first event; the first request that needs them waits for it (not init).
    tokio::spawn({
        let keys = keys.clone();
        async move {
            keys.ready().await;
        }
    });
    let limiter = RateLimiter::from_config(config, clients.dynamodb(), keys.clone())?;
    Ok((keys, limiter))
}

/// Wraps one function's router in the shared layers (see [`function_layers`] and [`edge_layers`]).
pub fn with_conventions(
    router: Router,
    cors_origins: &[String],
    limiter: Option<RateLimiter>,
) -> Router {
    edge_layers(function_layers(router, limiter), cors_origins)
}

/// What belongs to each function's routes: body limit and (optionally) rate limiting. Applied
/// before routers are merged, so the local runner scopes them per function as API Gateway does.
pub fn function_layers(router: Router, limiter: Option<RateLimiter>) -> Router {
    let router = router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    match limiter {
        Some(limiter) => router.layer(middleware::from_fn_with_state(
            limiter,
            rate_limit::middleware,
        )),
        None => router,
    }
}

/// What wraps every request, outermost first: request ids (so even a 429 or a CORS refusal
/// carries one), CORS, metrics, and a problem+json 404 for unknown routes.
pub fn edge_layers(router: Router, cors_origins: &[String]) -> Router {
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn(problems_only))
        .layer(middleware::from_fn(count_requests))
        .layer(cors::layer(cors_origins))
        .layer(middleware::from_fn(request_id::request_ids))
}

/// Errors that axum answers itself (a path segment that is not UTF-8, a query string that does
/// not parse, a method the route does not have) come as plain text or with no body; every error
/// answer is problem+json instead, with the same words.
async fn problems_only(req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let response = next.run(req).await;
    let status = response.status();
    // JSON answers stay (problem+json, and health's own health+json 503).
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim() == "application/json" || v.trim().ends_with("+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let detail = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request cannot be served")
            .to_owned()
    } else {
        text
    };
    let (kind, title) = match status.as_u16() {
        405 => ("method-not-allowed", "Method not allowed"),
        404 => ("not-found", "Not found"),
        401 => ("unauthorized", "Unauthorized"),
        408 => ("request-timeout", "Request timeout"),
        413 => ("payload-too-large", "Payload too large"),
        422 => ("unprocessable", "Unprocessable content"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        s if s >= 500 => ("internal", "Internal server error"),
        _ => ("bad-request", "Bad request"),
    };
    let mut problem = ApiError::new(status, kind, title, detail).into_response();
    // Keep what the original answer said about the method (`Allow`) and the like, and what
    // layers outside read from it (the tenant, for metrics).
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    *problem.extensions_mut() = parts.extensions;
    problem
}

/// `api_requests_total`, by tenant, route and status class, as an EMF metric.
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    let tenant = response
        .extensions()
        .get::<rate_limit::Tenant>()
        .map_or("anonymous", |t| t.0.as_str());
    crate::telemetry::metrics::emit(
        "api_requests_total",
        1.0,
        crate::telemetry::metrics::Unit::Count,
        &[
            ("tenant", tenant),
            ("route", &format!("{method} {route}")),
            ("status", &status),
        ],
    );
    response
}

/// What API Gateway invokes: the router behind [`context::strip_stage`]. Routing happens inside
/// the router, so the path must be rewritten before it, not in a layer.
pub type GatewayService =
    tower::util::MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request>;

pub fn gateway_service(router: Router) -> GatewayService {
    tower::util::MapRequest::new(
        router,
        context::strip_stage::<lambda_http::Body> as fn(_) -> _,
    )
}

/// Runs the router under the Lambda runtime. A function binary serves nothing else: locally,
/// `wfe-local` serves every function's router on one port (`scripts/start`), so no HTTP server
/// is linked into an artifact Lambda never runs it in (about 100 KiB of code).
pub async fn serve(router: Router) -> Result<(), lambda_http::Error> {
    under_lambda()?;
    lambda_http::run(gateway_service(router)).await
}

/// Checked first, before configuration is read: run outside Lambda, a function says where to
/// go instead of failing on the first setting it misses.
pub fn under_lambda() -> Result<(), lambda_http::Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Err(
            "AWS_LAMBDA_RUNTIME_API is not set: this binary runs under AWS Lambda; \
             `scripts/start` (wfe-local) serves every function locally"
                .into(),
        );
    }
    Ok(())
}

/// The whole `main` of an HTTP function: logs, config, SDK, the function's router from `build`,
/// the edge layers, then [`serve`]. A function that cannot start prints `Error: ...` and exits 1.
pub async fn run_function<F, Fut>(build: F) -> Result<(), ServeError>
where
    F: FnOnce(crate::config::Config, crate::aws::SdkConfig) -> Fut,
    Fut: std::future::Future<Output = Result<Router, String>>,
{
    under_lambda()?;
    crate::telemetry::init();
    let config = crate::config::Config::load().unwrap_or_else(|e| e.exit());
    let server = config.server().unwrap_or_else(|e| e.exit());
    let sdk = crate::aws::load_sdk_config();
    let app = build(config, sdk).await.unwrap_or_else(|e| {
        eprintln!("Error: {e}");
        std::process::exit(1)
    });
    serve(edge_layers(app, &server.cors_origins)).await
}

/// What `serve` fails with (the Lambda runtime's error type).
pub type ServeError = lambda_http::Error;

/// A handler result: JSON on success, problem+json on failure.
pub type ApiResult<T> = Result<T, ApiError>;

/// Turns any displayable backend failure into a logged 500.
pub fn internal<E: std::fmt::Display>(e: E) -> ApiError {
    ApiError::internal(e)
}

impl From<crate::events::StoreError> for ApiError {
    fn from(e: crate::events::StoreError) -> Self {
        use crate::events::StoreError as S;
        match e {
            S::Conflict { .. } | S::IdempotencyConflict { .. } => {
                ApiError::conflict("conflict", e.to_string())
            }
            S::TooLarge { .. } => ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                e.to_string(),
            ),
            other => ApiError::internal(other),
        }
    }
}
