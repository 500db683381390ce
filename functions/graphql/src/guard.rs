//! What is checked before a document runs (refusals answer 200 with a coded error: Apollo's
//! gateway reads a subgraph's errors only from a 2xx answer), and the codes of errors the executor reports
//! without one: size, parse, aliases, introspection, `_service` for signed-in callers only,
//! and GET requests read from the query string.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use axum::http::StatusCode;

use crate::errors;

/// Longest accepted document. The frontend's largest query is a few KB.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Most aliased fields in one document: aliases are how one request asks for the same
/// expensive field many times. (A gateway's query plans alias a few fields of their own.)
pub const MAX_ALIASES: usize = 30;
/// Most mutations in one document: each is a write the rate limiter counts as one request.
pub const MAX_MUTATIONS: usize = 5;

pub struct Checked {
    /// `query`, `mutation` or `subscription`; `unknown` when the executor will refuse it.
    pub operation: &'static str,
}

pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub operation: &'static str,
}

fn refusal(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        operation: "unknown",
    }
}

impl Refusal {
    fn of(mut self, operation: &'static str) -> Self {
        self.operation = operation;
        self
    }
}

#[derive(Default)]
struct Census {
    aliases: usize,
    /// Root fields of the operation that runs, when it is a mutation.
    mutations: usize,
    introspection: bool,
    service: bool,
}

fn walk(set: &SelectionSet, census: &mut Census, depth: usize) {
    // The parser bounds nesting already; this only guards the walk itself.
    if depth > 64 {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                let f = &f.node;
                if f.alias.is_some() {
                    census.aliases += 1;
                }
                match f.name.node.as_str() {
                    "__schema" | "__type" => census.introspection = true,
                    "_service" => census.service = true,
                    _ => {}
                }
                walk(&f.selection_set.node, census, depth + 1);
            }
            Selection::InlineFragment(i) => walk(&i.node.selection_set.node, census, depth + 1),
            Selection::FragmentSpread(_) => {}
        }
    }
}

fn operation_type(doc: &ExecutableDocument, name: Option<&str>) -> Option<&'static str> {
    let op = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        _ => None,
    }?;
    Some(match op.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    })
}

pub fn check(
    request: &async_graphql::Request,
    introspection: bool,
    authenticated: bool,
) -> Result<Checked, Refusal> {
    if request.query.is_empty() && request.extensions.contains_key("persistedQuery") {
        return Err(refusal(
            StatusCode::OK,
            errors::PERSISTED_QUERY_NOT_SUPPORTED,
            "persisted queries are not supported; send the query text",
        ));
    }
    if request.query.len() > MAX_QUERY_BYTES {
        return Err(refusal(
            StatusCode::OK,
            errors::BAD_USER_INPUT,
            format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    let doc = async_graphql::parser::parse_query(&request.query).map_err(|e| {
        refusal(
            StatusCode::OK,
            errors::GRAPHQL_PARSE_FAILED,
            format!("the query does not parse: {e}"),
        )
    })?;
    let operation = operation_type(&doc, request.operation_name.as_deref()).unwrap_or("unknown");
    let mut census = Census::default();
    for (_, op) in doc.operations.iter() {
        walk(&op.node.selection_set.node, &mut census, 0);
        if op.node.ty == OperationType::Mutation {
            census.mutations = census.mutations.max(op.node.selection_set.node.items.len());
        }
    }
    for fragment in doc.fragments.values() {
        walk(&fragment.node.selection_set.node, &mut census, 0);
    }
    if census.aliases > MAX_ALIASES {
        return Err(refusal(
            StatusCode::OK,
            errors::MAX_ALIASES_LIMIT,
            format!(
                "the query uses {} aliases; at most {MAX_ALIASES} are allowed",
                census.aliases
            ),
        )
        .of(operation));
    }
    if census.mutations > MAX_MUTATIONS {
        return Err(refusal(
            StatusCode::OK,
            errors::MAX_ROOT_FIELDS_LIMIT,
            format!("a document holds at most {MAX_MUTATIONS} mutations; send more requests"),
        )
        .of(operation));
    }
    if census.introspection && !introspection {
        return Err(refusal(
            StatusCode::OK,
            errors::INTROSPECTION_DISABLED,
            "introspection is disabled here (GRAPHQL_INTROSPECTION); the schema is published \
             as the subgraph's SDL (`_service { sdl }`)",
        )
        .of(operation));
    }
    if census.service && !authenticated {
        return Err(refusal(
            StatusCode::OK,
            errors::UNAUTHENTICATED,
            "`_service` needs an access token, as every other field",
        )
        .of(operation));
    }
    Ok(Checked { operation })
}

/// A GET request's query string (`query`, `operationName`, `variables`, `extensions`).
pub fn from_query_string(qs: &str) -> Result<async_graphql::Request, String> {
    let mut query = None;
    let mut operation_name = None;
    let mut variables = None;
    for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
        match k.as_ref() {
            "query" => query = Some(v.into_owned()),
            "operationName" => operation_name = Some(v.into_owned()),
            "variables" => {
                let json: serde_json::Value = serde_json::from_str(&v)
                    .map_err(|e| format!("`variables` is not JSON: {e}"))?;
                variables = Some(async_graphql::Variables::from_json(json));
            }
            "extensions" => {}
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    let mut request =
        async_graphql::Request::new(query.ok_or("a GET request needs a `query` parameter")?);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    if let Some(vars) = variables {
        request = request.variables(vars);
    }
    Ok(request)
}

/// Gives every error the executor reported without a code the one it means.
pub fn coded(mut response: async_graphql::Response) -> async_graphql::Response {
    for e in &mut response.errors {
        let has_code = e
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some());
        if has_code {
            continue;
        }
        let code = if e.message.contains("nested too deep") {
            errors::MAX_DEPTH_LIMIT
        } else if e.message.contains("too complex") {
            errors::COST_ESTIMATED_TOO_EXPENSIVE
        } else if e.path.is_empty() {
            errors::GRAPHQL_VALIDATION_FAILED
        } else {
            // Argument values refused while resolving (`first: 500`).
            errors::BAD_USER_INPUT
        };
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
    response
}
