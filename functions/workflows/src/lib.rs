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
use shared::executions::Projections;
use shared::http::{ApiError, ApiResult, Authenticated, Document, Json};
use shared::workflows::WorkflowStore;

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
    // Its two stores only, not `Services`: the event store behind `Services` is a trait object,
    // so building it would link every DynamoDB write path into a function that reads and
    // writes workflow items only (docs/PERFORMANCE.md, function artifacts).
    let tables = config.tables().map_err(|e| e.to_string())?;
    let clients = shared::aws::Clients::new(sdk);
    let dynamodb = clients.dynamodb();
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let state = WorkflowsState {
        workflows: WorkflowStore::new(dynamodb.clone(), tables.state.clone()),
        projections: Projections::new(dynamodb, tables.state),
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

use shared::services::workflows as service;
pub use shared::services::workflows::workflow_error;

async fn validate_only(
    Authenticated(_): Authenticated,
    Document(doc): Document,
) -> ApiResult<Json<Value>> {
    service::checked(&doc)?;
    Ok(Json(json!({"valid": true, "errors": []})))
}

async fn create(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Document(doc): Document,
) -> ApiResult<impl IntoResponse> {
    let (workflow, version) = service::create(&s.workflows, &claims, &doc).await?;
    let id = &workflow.id;
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
    let (items, next) = service::list(
        &s.workflows,
        &claims,
        q.status.as_deref(),
        q.name_prefix.as_deref(),
        q.limit,
        q.cursor.as_deref(),
    )
    .await?;
    Ok(Json(json!({"items": items, "next_cursor": next})))
}

async fn get_one(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (workflow, version) = service::latest(&s.workflows, &claims, &id).await?;
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
    // The definition is judged first, as before: an invalid one is a 422 whatever the header.
    service::checked(&doc)?;
    let expected = match headers.get(axum::http::header::IF_MATCH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().trim_matches('"').parse().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid-if-match",
                        "`If-Match` is the version number you read",
                    )
                })?,
        ),
        None => None,
    };
    let (workflow, version) = service::update(&s.workflows, &claims, &id, expected, &doc).await?;
    Ok(Json(
        json!({"workflow": workflow, "definition": version.definition}),
    ))
}

async fn archive(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workflow = service::archive(&s.workflows, &claims, &id).await?;
    Ok(Json(json!({"workflow": workflow})))
}

async fn restore(
    State(s): State<WorkflowsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let workflow = service::restore(&s.workflows, &claims, &id).await?;
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
    let v = service::version(&s.workflows, &claims, &id, version).await?;
    Ok(Json(json!(v)))
}
