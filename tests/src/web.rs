//! The web app's origin locally, as a CDN would serve it in the cloud: the frontend build
//! (`frontend/dist`, every unknown path answered with `index.html` for client-side routes), the
//! REST API under `/api` (prefix removed), and `/graphql` passed through to the federation
//! gateway. One origin means no CORS between the app and the engine, and the app's default
//! same-origin URLs work unchanged under `vite preview`, which proxies the same paths.

use std::path::Path;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

/// The largest GraphQL request passed on (the subgraph refuses documents over 32 KB anyway).
const MAX_GRAPHQL_BODY: usize = 1 << 20;

/// Request headers the gateway needs; everything else (cookies included) stays here.
const FORWARDED: [&str; 5] = [
    "authorization",
    "content-type",
    "accept",
    "x-request-id",
    "apollo-require-preflight",
];

#[derive(Clone)]
struct Gateway {
    client: reqwest::Client,
    url: String,
    port: u16,
}

/// `dist` must hold `index.html`; `gateway` is the gateway's base URL (`http://127.0.0.1:4000`).
pub fn web_app(dist: &Path, api: Router, gateway: &str) -> Router {
    let gateway = Gateway {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("a reqwest client builds"),
        url: format!("{}/graphql", gateway.trim_end_matches('/')),
        port: reqwest::Url::parse(gateway)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .unwrap_or(4000),
    };
    // Hashed bundles may be cached for good; `index.html` must be asked for again, or a browser
    // that kept an old one asks for bundles a rebuild removed. A missing bundle is a 404, not
    // the app's page (which a browser would try to run as a script).
    let assets = ServeDir::new(dist.join("assets"));
    let index = ServeFile::new(dist.join("index.html"));
    Router::new()
        .route("/graphql", any(graphql).with_state(gateway))
        .nest_service("/api", api)
        .nest_service("/assets", assets)
        .fallback_service(ServeDir::new(dist).fallback(index))
        .layer(axum::middleware::map_response(no_cache_for_html))
}

async fn no_cache_for_html(mut response: Response) -> Response {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

async fn graphql(State(gw): State<Gateway>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = to_bytes(body, MAX_GRAPHQL_BODY).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            "a GraphQL request may be at most 1 MB",
        );
    };
    let mut url = gw.url.clone();
    if let Some(q) = parts.uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut out = gw.client.request(parts.method.clone(), url).body(body);
    for name in FORWARDED {
        if let Some(v) = parts.headers.get(name) {
            out = out.header(name, v);
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) if e.is_timeout() => {
            return problem(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway Timeout",
                "the GraphQL gateway did not answer within 30 s",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "GraphQL gateway unreachable");
            return problem(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway",
                &format!(
                    "GraphQL gateway unreachable: ensure the graphql-gateway service is running on port {}",
                    gw.port
                ),
            );
        }
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(_) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                "Bad Gateway",
                "the GraphQL gateway's answer broke off",
            )
        }
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if let Some(ra) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, ra);
    }
    response
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
