//! The workflows function: `POST/GET /workflows`, `POST /workflows/validate`,
//! `GET/PUT/DELETE /workflows/{id}` (PUT adds a version, DELETE archives) and
//! `GET /workflows/{id}/versions/{version}`. Every route is scoped to the caller's tenant.

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::domain::{Definition, Problem};
use shared::executions::Projections;
use shared::http::{ApiError, ApiResult, Authenticated, Document, Json};
use shared::workflows::{WorkflowError, WorkflowStore};

#[derive(Clone)]
pub struct WorkflowsState {
    pub workflows: WorkflowStore,
    pub projections: Projections,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<WorkflowsState> for Arc<JwtKeys> {
    fn from_ref(state: &WorkflowsState) -> Self {
        state.keys.clone()
    }
}

/// Builds the function from config and clients: what `main` serves and the local runner mounts.
pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let services = shared::engine::Services::new(config, sdk)?;
    let (keys, limiter) = shared::http::authenticated(config, sdk).await?;
    let state = WorkflowsState {
        workflows: services.workflows,
        projections: services.projections,
        keys,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: WorkflowsState) -> Router {
    Router::new()
        .route("/workflows", post(create).get(list))
        .route("/workflows/validate", post(validate_only))
        .route("/workflows/{id}", get(get_one).put(update).delete(archive))
        .route("/workflows/{id}/versions/{version}", get(get_version))
        .route("/workflows/{id}/restore", post(restore))
        .with_state(state)
}

pub fn workflow_error(e: WorkflowError) -> ApiError {
    match e {
        WorkflowError::Exists(_) => ApiError::conflict("workflow-exists", e.to_string()),
        WorkflowError::NotFound(_) | WorkflowError::NoVersion { .. } => {
            ApiError::not_found(e.to_string())
        }
        WorkflowError::Conflict(_) => ApiError::conflict("version-conflict", e.to_string()),
        WorkflowError::BadCursor(m) => ApiError::bad_request("invalid-cursor", m),
        WorkflowError::Backend(b) => ApiError::internal(b),
    }
}

/// Reads and validates a definition; every problem at once as a 422.
fn checked(document: Value) -> ApiResult<Definition> {
    shared::domain::validate::check(&document).map_err(invalid)
}

fn invalid(problems: Vec<Problem>) -> ApiError {
    let summary = problems
        .iter()
        .take(3)
        .map(|p| {
            format!(
                "{}: {}",
                if p.pointer.is_empty() {
                    "/"
                } else {
                    &p.pointer
                },
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let more = problems.len().saturating_sub(3);
    let detail = if more > 0 {
        format!("{summary}; and {more} more (see `errors`)")
    } else {
        summary
    };
    ApiError::unprocessable(
        "invalid-workflow",
        format!("the workflow is not valid: {detail}"),
    )
    .with_errors(problems)
}

async fn validate_only(
    Authenticated(_): Authenticated,
    Document(doc): Document,
) -> ApiResult<Json<Value>> {
    checked(doc)?;
    Ok(Json(json!({"valid": true, "errors": []})))
}

async fn create(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Document(doc): Document,
) -> ApiResult<impl IntoResponse> {
    let definition = checked(doc)?;
    let id = definition
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (workflow, version) = s
        .workflows
        .create(&claims.tenant, &claims.sub, &id, definition)
        .await
        .map_err(workflow_error)?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, format!("/workflows/{id}"))],
        Json(json!({"workflow": workflow, "definition": version.definition})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    status: Option<String>,
    name_prefix: Option<String>,
}

async fn list(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    if let Some(status) = q.status.as_deref() {
        if !matches!(status, "active" | "archived") {
            return Err(ApiError::bad_request(
                "invalid-query",
                "`status` is `active` or `archived`",
            ));
        }
    }
    let (items, next) = s
        .workflows
        .list(
            &claims.tenant,
            q.status.as_deref(),
            q.name_prefix.as_deref(),
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
        )
        .await
        .map_err(workflow_error)?;
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

async fn get_one(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workflow = s
        .workflows
        .get(&claims.tenant, &id)
        .await
        .map_err(workflow_error)?;
    let version = s
        .workflows
        .version(&claims.tenant, &id, workflow.latest_version)
        .await
        .map_err(workflow_error)?;
    let stats = s
        .projections
        .workflow_stats(&claims.tenant, &id)
        .await
        .map_err(shared::http::internal)?;
    Ok(Json(
        json!({"workflow": workflow, "definition": version.definition, "stats": stats}),
    ))
}

/// A new version. `If-Match: <version>` makes it conditional on the version the client read.
async fn update(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    Document(doc): Document,
) -> ApiResult<Json<Value>> {
    let definition = checked(doc)?;
    if definition.id.as_deref().is_some_and(|given| given != id) {
        return Err(ApiError::unprocessable(
            "id-mismatch",
            format!("the body's id is not {id}"),
        ));
    }
    let expected = match headers.get(axum::http::header::IF_MATCH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().trim_matches('"').parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid-if-match",
                    "`If-Match` is the version number you read",
                )
            })?,
        None => {
            s.workflows
                .get(&claims.tenant, &id)
                .await
                .map_err(workflow_error)?
                .latest_version
        }
    };
    let (workflow, version) = s
        .workflows
        .update(&claims.tenant, &claims.sub, &id, expected, definition)
        .await
        .map_err(workflow_error)?;
    Ok(Json(
        json!({"workflow": workflow, "definition": version.definition}),
    ))
}

async fn archive(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workflow = s
        .workflows
        .archive(&claims.tenant, &id)
        .await
        .map_err(workflow_error)?;
    Ok(Json(json!({"workflow": workflow})))
}

async fn restore(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workflow = s
        .workflows
        .restore(&claims.tenant, &id)
        .await
        .map_err(workflow_error)?;
    Ok(Json(json!({"workflow": workflow})))
}

async fn get_version(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path((id, version)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::bad_request("invalid-version", "a version is a positive number"))?;
    let v = s
        .workflows
        .version(&claims.tenant, &id, version)
        .await
        .map_err(workflow_error)?;
    Ok(Json(json!(v)))
}
