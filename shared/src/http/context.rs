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
