//! Rate limiting per principal that holds across Lambda instances: a fixed-window counter per
//! principal in the state table (atomic `ADD`, expired by TTL). Every response carries
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`; over the limit the answer
//! is 429 problem+json with `Retry-After`.

use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::context::client_ip;
use super::ApiError;

pub const LIMIT: &str = "x-ratelimit-limit";
pub const REMAINING: &str = "x-ratelimit-remaining";
pub const RESET: &str = "x-ratelimit-reset";

/// Who is being limited: the authenticated user, or the caller's IP when anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

/// An authenticated caller: (tenant, subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub sub: String,
}

/// Finds the caller of a request (e.g. by verifying its bearer token, keeping the result in the
/// request for the handler); `None` means anonymous.
pub type Identify = Arc<dyn Fn(&mut Request) -> Option<Caller> + Send + Sync>;

/// The tenant a response was for, left in its extensions for the metrics layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    /// Requests allowed per window (the burst).
    pub limit: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Epoch seconds when the window resets.
    pub reset: u64,
}

/// Pure: what `hits` requests in the window starting at `window_start` mean at time `now`.
pub fn decide(policy: RatePolicy, hits: u64, now: u64) -> Decision {
    let window_start = now - now % policy.window_secs;
    Decision {
        allowed: hits <= policy.limit as u64,
        limit: policy.limit,
        remaining: (policy.limit as u64).saturating_sub(hits) as u32,
        reset: window_start + policy.window_secs,
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    client: aws_sdk_dynamodb::Client,
    table: String,
    policy: RatePolicy,
    identify: Identify,
    /// The keys `identify` verifies with, waited for before identifying (the first requests of
    /// an environment may arrive before they are read).
    keys: Option<std::sync::Arc<crate::auth::JwtKeys>>,
}

impl RateLimiter {
    /// The limiter every authenticated function uses: per user (per IP when anonymous), with the
    /// policy from `RATE_LIMIT_REQUESTS` / `RATE_LIMIT_WINDOW_SECS`.
    pub fn from_config(
        config: &crate::config::Config,
        dynamodb: aws_sdk_dynamodb::Client,
        keys: std::sync::Arc<crate::auth::JwtKeys>,
    ) -> Result<Self, String> {
        let tables = config.tables().map_err(|e| e.to_string())?;
        let (limit, window_secs) = config.rate_limit().map_err(|e| e.to_string())?;
        Ok(Self {
            keys: Some(keys.clone()),
            ..Self::new(
                dynamodb,
                tables.state,
                RatePolicy { limit, window_secs },
                super::bearer::identify(keys),
            )
        })
    }

    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        policy: RatePolicy,
        identify: Identify,
    ) -> Self {
        Self {
            client,
            table,
            policy,
            identify,
            keys: None,
        }
    }

    /// Counts one request for `principal` and decides; the counter is shared by every instance.
    pub async fn hit(&self, principal: &str, now: u64) -> Result<Decision, String> {
        let window = now / self.policy.window_secs;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("RATE#{principal}")))
            .key("sk", AttributeValue::S(window.to_string()))
            .update_expression("ADD hits :one SET expires_at = if_not_exists(expires_at, :exp)")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(
                ":exp",
                AttributeValue::N(((window + 2) * self.policy.window_secs).to_string()),
            )
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        let hits = match out.attributes().and_then(|a| a.get("hits")) {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(u64::MAX),
            _ => u64::MAX,
        };
        Ok(decide(self.policy, hits, now))
    }
}

fn set_headers(response: &mut Response, d: &Decision) {
    let headers = response.headers_mut();
    headers.insert(LIMIT, HeaderValue::from(d.limit));
    headers.insert(REMAINING, HeaderValue::from(d.remaining));
    headers.insert(RESET, HeaderValue::from(d.reset));
}

pub async fn middleware(
    State(limiter): State<RateLimiter>,
    mut req: Request,
    next: Next,
) -> Response {
    // Only a request with a token waits for the keys to identify its caller.
    if let Some(keys) = &limiter.keys {
        if req
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            keys.ready().await;
        }
    }
    let caller = (limiter.identify)(&mut req);
    let principal = caller
        .as_ref()
        .map(|c| format!("user:{}/{}", c.tenant, c.sub))
        .or_else(|| client_ip(&req).map(|ip| format!("ip:{ip}")))
        .unwrap_or_else(|| "anonymous".to_owned());
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let decision = match limiter.hit(&principal, now).await {
        Ok(d) => d,
        Err(e) => {
            // Failing open: a throttling store outage must not take the API down with it.
            tracing::warn!(error = %e, "rate limiter unavailable; request let through");
            return next.run(req).await;
        }
    };
    if !decision.allowed {
        let mut response =
            ApiError::too_many_requests(decision.reset.saturating_sub(now).max(1)).into_response();
        set_headers(&mut response, &decision);
        return response;
    }
    req.extensions_mut().insert(Principal(principal));
    let mut response = next.run(req).await;
    set_headers(&mut response, &decision);
    if let Some(c) = caller {
        response.extensions_mut().insert(Tenant(c.tenant));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_count_down_then_refuse_until_the_window_resets() {
        let p = RatePolicy {
            limit: 3,
            window_secs: 60,
        };
        let d = decide(p, 1, 125);
        assert_eq!((d.allowed, d.remaining, d.reset), (true, 2, 180));
        assert_eq!(decide(p, 3, 125).remaining, 0);
        assert!(decide(p, 3, 125).allowed);
        let over = decide(p, 4, 179);
        assert_eq!((over.allowed, over.remaining, over.reset), (false, 0, 180));
    }
}
