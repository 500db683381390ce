//! CORS from the configured allow-list (`cors_origins` / `CORS_ORIGINS`). Credentials are allowed,
//! so origins are always listed explicitly: a `*` is refused when the config is read.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::rate_limit::{LIMIT, REMAINING, RESET};
use super::request_id::{CORRELATION_ID, REQUEST_ID};

pub fn layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(REQUEST_ID),
            HeaderName::from_static(CORRELATION_ID),
        ])
        .expose_headers([
            HeaderName::from_static(REQUEST_ID),
            HeaderName::from_static(CORRELATION_ID),
            HeaderName::from_static(LIMIT),
            HeaderName::from_static(REMAINING),
            HeaderName::from_static(RESET),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}
