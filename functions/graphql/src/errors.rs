//! GraphQL errors in Apollo's conventions: every error a resolver returns carries
//! `extensions.code`, derived from the same problem the REST API would answer with, so a rule's
//! refusal reads the same on both faces. Internals never reach the client (the problem's detail
//! of a 500 is already generic).

use async_graphql::{ErrorExtensions, Value};
use shared::http::ApiError;

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const CONFLICT: &str = "CONFLICT";
pub const BUDGET_EXCEEDED: &str = "BUDGET_EXCEEDED";
pub const RATE_LIMITED: &str = "RATE_LIMITED";
pub const SERVICE_UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";
pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
pub const MAX_DEPTH_LIMIT: &str = "MAX_DEPTH_LIMIT";
pub const MAX_ALIASES_LIMIT: &str = "MAX_ALIASES_LIMIT";
pub const MAX_ROOT_FIELDS_LIMIT: &str = "MAX_ROOT_FIELDS_LIMIT";
pub const MAX_ENTITIES_LIMIT: &str = "MAX_ENTITIES_LIMIT";
pub const TIMEOUT: &str = "TIMEOUT";
pub const COST_ESTIMATED_TOO_EXPENSIVE: &str = "COST_ESTIMATED_TOO_EXPENSIVE";
pub const INTROSPECTION_DISABLED: &str = "INTROSPECTION_DISABLED";
pub const PERSISTED_QUERY_NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";

/// The code of a problem, by what kind of refusal it is.
pub fn code_of(e: &ApiError) -> &'static str {
    if e.kind.starts_with("budget") {
        return BUDGET_EXCEEDED;
    }
    match e.status.as_u16() {
        400 | 413 | 415 | 422 => BAD_USER_INPUT,
        401 => UNAUTHENTICATED,
        403 => FORBIDDEN,
        404 => NOT_FOUND,
        409 | 412 => CONFLICT,
        402 => BUDGET_EXCEEDED,
        429 => RATE_LIMITED,
        // A dependency (a tenant's MCP server) or the backend is unavailable.
        424 | 502..=504 => SERVICE_UNAVAILABLE,
        _ => INTERNAL_SERVER_ERROR,
    }
}

/// A service's refusal as a GraphQL error: the detail as the message; the code, the problem's
/// kind and (for validation failures) each JSON pointer at fault as extensions.
pub fn from_problem(e: ApiError) -> async_graphql::Error {
    let code = code_of(&e);
    let problems = e.errors.clone();
    let kind = e.kind;
    let retry_after = e.retry_after;
    async_graphql::Error::new(e.detail).extend_with(move |_, ext| {
        ext.set("code", code);
        ext.set("type", kind);
        if let Some(problems) = &problems {
            if let Ok(v) = Value::from_json(problems.clone()) {
                ext.set("problems", v);
            }
        }
        if let Some(secs) = retry_after {
            ext.set("retryAfter", secs);
        }
    })
}

/// `?` on a service result inside a resolver.
pub trait OrGraphql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> OrGraphql<T> for Result<T, ApiError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(from_problem)
    }
}

pub fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::ServerError {
    let mut e = async_graphql::ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", code);
    e.extensions = Some(ext);
    e
}
