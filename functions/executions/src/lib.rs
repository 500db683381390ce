//! The executions function: `POST /workflows/{id}/executions` (idempotent with an
//! `Idempotency-Key`), `GET /executions` (by workflow and status), `GET /executions/{id}`, its
//! event history, and the commands `cancel`, `approvals/{step}` and `redrive`. The rules live in
//! `shared::services::executions`, shared with the GraphQL subgraph.

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::engine::Services;
use shared::http::{ApiError, ApiResult, Authenticated, Json};
use shared::services::executions::{self as service, Accepted, Decision, Started};

pub use shared::services::executions::MAX_IDEMPOTENCY_KEY;

#[derive(Clone)]
pub struct ExecutionsState {
    pub services: Services,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<ExecutionsState> for Arc<JwtKeys> {
    fn from_ref(state: &ExecutionsState) -> Self {
        state.keys.clone()
    }
}

pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let clients = shared::aws::Clients::new(sdk);
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let state = ExecutionsState {
        services: Services::with_clients(config, clients)?,
        keys,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: ExecutionsState) -> Router {
    Router::new()
        .route("/workflows/{id}/executions", post(start))
        .route("/executions", get(list))
        .route("/executions/{id}", get(get_one))
        .route("/executions/{id}/events", get(history))
        .route("/executions/{id}/cancel", post(cancel))
        .route("/executions/{id}/approvals/{step}", post(decide_approval))
        .route("/executions/{id}/redrive", post(redrive))
        .with_state(state)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    input: Value,
    version: Option<u32>,
}

fn accepted(a: Accepted) -> (StatusCode, Json<Value>) {
    (StatusCode::ACCEPTED, Json(json!(a)))
}

fn started(answer: Started) -> impl IntoResponse {
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        [(
            axum::http::header::LOCATION,
            format!("/executions/{}", answer.execution_id),
        )],
        Json(json!(answer)),
    )
}

async fn start(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(workflow_id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> ApiResult<impl IntoResponse> {
    let key = match headers.get("idempotency-key") {
        // A header that is not text is as bad as an empty one.
        Some(raw) => service::idempotency_key(Some(raw.to_str().unwrap_or_default()))?,
        None => None,
    };
    let req = service::StartRequest {
        input: req.input,
        version: req.version,
        idempotency_key: key,
    };
    Ok(started(
        service::start(&s.services, &claims, &workflow_id, &req).await?,
    ))
}

async fn get_one(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (summary, input) = service::get(&s.services, &claims, &id).await?;
    let mut body = json!(summary);
    body["input"] = input;
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workflow_id: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    let page = service::list(
        &s.services,
        &claims,
        q.workflow_id.as_deref(),
        q.status.as_deref(),
        q.limit,
        q.cursor.as_deref(),
    )
    .await?;
    Ok(Json(json!(page)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    from: Option<u64>,
    limit: Option<u32>,
}

async fn history(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    let page = service::history(&s.services, &claims, &id, q.from, q.limit).await?;
    let events: Vec<Value> = page
        .events
        .iter()
        .map(|e| {
            json!({
                "version": e.version,
                "type": e.event_type,
                "at": e.metadata.occurred_at,
                "actor": e.metadata.actor,
                "payload": e.payload,
            })
        })
        .collect();
    Ok(Json(json!({"events": events, "next": page.next})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    reason: Option<String>,
}

async fn cancel(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    // The body is optional: an empty one cancels without a reason.
    let reason = if body.is_empty() {
        None
    } else {
        shared::http::parse_json::<CancelRequest>(&body)?.reason
    };
    Ok(accepted(
        service::cancel(&s.services, &claims, &id, reason).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    decision: Decision,
    comment: Option<String>,
}

async fn decide_approval(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path((id, key)): Path<(String, String)>,
    Json(req): Json<ApprovalRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(accepted(
        service::decide(&s.services, &claims, &id, &key, req.decision, req.comment).await?,
    ))
}

async fn redrive(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(accepted(service::redrive(&s.services, &claims, &id).await?))
}
