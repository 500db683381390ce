//! Request and correlation ids: taken from the gateway or the caller, or made up; echoed in every
//! response (`X-Request-Id`, `X-Correlation-ID`), in every log line of the request, and in
//! problem+json bodies.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::context::gateway_request_id;

pub const REQUEST_ID: &str = "x-request-id";
pub const CORRELATION_ID: &str = "x-correlation-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A caller-supplied id is kept only if it is a short, plain token (it ends up in logs).
fn sane(value: Option<&HeaderValue>) -> Option<String> {
    let v = value?.to_str().ok()?.trim();
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| v.to_owned())
}

pub async fn request_ids(req: Request, next: Next) -> Response {
    let request_id = gateway_request_id(&req)
        .or_else(|| sane(req.headers().get(REQUEST_ID)))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let correlation_id =
        sane(req.headers().get(CORRELATION_ID)).unwrap_or_else(|| request_id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        correlation_id = %correlation_id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let mut response = CURRENT
        .scope(request_id.clone(), next.run(req).instrument(span))
        .await;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        headers.insert(CORRELATION_ID, v);
    }
    response
}
