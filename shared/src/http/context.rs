//! What a request says about where it came from, under API Gateway (via lambda_http's request
//! context) or locally (the socket address).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::Request;
use lambda_http::request::RequestContext;
use lambda_http::RequestExt;

/// API Gateway's own request id, when the request came through it.
pub fn gateway_request_id<B>(req: &Request<B>) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.request_id.clone(),
        RequestContext::ApiGatewayV1(ctx) => ctx.request_id.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The caller's IP: API Gateway's `sourceIp`, or the socket peer when served locally. Client
/// headers such as `X-Forwarded-For` are not trusted: anyone can set them.
pub fn client_ip<B>(req: &Request<B>) -> Option<String> {
    let from_gateway = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.identity.source_ip.clone(),
        _ => None,
    };
    from_gateway.or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string())
    })
}

/// A request from API Gateway with its stage removed from the path: HTTP APIs on a named stage
/// put it in `rawPath` (`/dev/auth/login`), and REST APIs get it prefixed by lambda_http unless
/// told otherwise; the routes never include it.
pub fn strip_stage<B>(mut req: Request<B>) -> Request<B> {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return req;
    };
    let path = req.uri().path();
    let rest = match path.strip_prefix(&format!("/{stage}")) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return req,
    };
    let mut path_and_query = if rest.is_empty() {
        "/".to_owned()
    } else {
        rest.to_owned()
    };
    if let Some(q) = req.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;

    fn request(path: &str, stage: &str) -> Request<()> {
        let mut ctx = ApiGatewayV2httpRequestContext::default();
        ctx.stage = Some(stage.to_owned());
        Request::builder()
            .uri(path)
            .body(())
            .unwrap()
            .with_request_context(RequestContext::ApiGatewayV2(ctx))
    }

    #[test]
    fn the_stage_is_stripped_only_as_a_whole_path_segment() {
        let path = |p: &str, s: &str| strip_stage(request(p, s)).uri().to_string();
        assert_eq!(path("/dev/auth/login?x=1", "dev"), "/auth/login?x=1");
        assert_eq!(path("/dev", "dev"), "/");
        assert_eq!(path("/devices/1", "dev"), "/devices/1");
        assert_eq!(path("/auth/login", "$default"), "/auth/login");
        assert_eq!(
            strip_stage(Request::builder().uri("/dev/x").body(()).unwrap()).uri(),
            "/dev/x"
        );
    }
}
