//! The executions function: `POST /workflows/{id}/executions` (idempotent with an
//! `Idempotency-Key`), `GET /executions` (by workflow and status), `GET /executions/{id}`, its
//! event history, and the commands `cancel`, `approvals/{step}` and `redrive`. Commands append
//! to the execution's stream with optimistic concurrency; the orchestrator does the rest.

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::{Claims, JwtKeys};
use shared::domain::execution::{
    ExecutionEvent as E, ExecutionState, ExecutionStatus, StepStatus, Summary,
};
use shared::domain::validate_input;
use shared::engine::Services;
use shared::events::{ExpectedVersion, StoreError, StreamId};
use shared::executions::{stream_id, Cause, RepoError};
use shared::http::{ApiError, ApiResult, Authenticated, Json};
use shared::workflows::{WorkflowError, WorkflowStatus};

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// A command that loses the race with the orchestrator or a worker (a busy map appends often)
/// re-reads and tries again this often, after a jittered pause (about 6 s at most in all).
const COMMAND_ATTEMPTS: u32 = 12;

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
    let (keys, limiter) = shared::http::authenticated(config, sdk).await?;
    let state = ExecutionsState {
        services: Services::new(config, sdk)?,
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

fn repo_error(e: RepoError) -> ApiError {
    match e {
        RepoError::Store(s) => s.into(),
        other => ApiError::internal(other),
    }
}

fn stream(claims: &Claims, id: &str) -> ApiResult<StreamId> {
    stream_id(&claims.tenant, id).map_err(|_| ApiError::not_found(format!("no execution {id}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    input: Value,
    version: Option<u32>,
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "invalid-idempotency-key",
            format!("`Idempotency-Key` is 1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

async fn start(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(workflow_id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<StartRequest>,
) -> ApiResult<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    // With a key, the execution id is derived from it: a retry names the same execution, and is
    // answered with that execution as it is now (even after the workflow changed or was archived).
    let derived = key
        .as_ref()
        .map(|k| shared::engine::derived_id(&[&claims.tenant, &workflow_id, k]));
    if let Some(id) = &derived {
        if let Some(answer) = replay_start(&s, &claims, &workflow_id, id, &req).await? {
            return Ok(answer);
        }
    }
    let wf = s
        .services
        .workflows
        .get(&claims.tenant, &workflow_id)
        .await
        .map_err(workflows::workflow_error)?;
    if wf.status == WorkflowStatus::Archived {
        return Err(ApiError::conflict(
            "workflow-archived",
            format!("workflow {workflow_id} is archived; it starts no new executions"),
        ));
    }
    let pinned = req.version.unwrap_or(wf.latest_version);
    let version = match s
        .services
        .workflows
        .version(&claims.tenant, &workflow_id, pinned)
        .await
    {
        Err(e @ WorkflowError::NoVersion { .. }) => {
            return Err(ApiError::unprocessable("no-such-version", e.to_string()))
        }
        other => other.map_err(workflows::workflow_error)?,
    };
    let input = if req.input.is_null() {
        json!({})
    } else {
        req.input.clone()
    };
    if let Some(problem) = shared::domain::validate::input_size_problem(&input) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input-too-large",
            "Input too large",
            problem,
        ));
    }
    let problems = validate_input(&version.definition, &input);
    if !problems.is_empty() {
        let detail: Vec<String> = problems
            .iter()
            .take(3)
            .map(|p| format!("{}: {}", p.pointer, p.message))
            .collect();
        return Err(ApiError::unprocessable(
            "invalid-input",
            format!(
                "the input does not match the workflow's input schema: {}",
                detail.join("; ")
            ),
        )
        .with_errors(problems));
    }
    let id = derived.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let stream = stream(&claims, &id)?;
    let cause = Cause {
        tenant: &claims.tenant,
        actor: &claims.sub,
        correlation_id: &id,
        causation_id: None,
        at: Utc::now(),
    };
    let event = shared::engine::started(&id, &version, input, None);
    let result = s
        .services
        .repo
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event.clone()],
            &cause,
            key.clone(),
        )
        .await;
    if let Ok(r) = &result {
        if !r.replayed {
            // The first summary, so the execution is listed (and watched by the stalled-execution
            // sweep) even if its first record never reaches the orchestrator. Best effort: the
            // orchestrator writes it again with its first turn.
            let mut state = shared::domain::execution::ExecutionState::default();
            shared::domain::execution::evolve(&mut state, r.first_version, cause.at, &event);
            let summary = shared::domain::execution::Summary::of(&state).listing();
            if let Err(e) = s
                .services
                .projections
                .write_summary(&claims.tenant, &summary)
                .await
            {
                tracing::warn!(execution = %id, error = %e, "first summary not written");
            }
        }
    }
    let replayed = match result {
        Ok(r) => r.replayed,
        // A concurrent request with the same key got there first: answer as its replay.
        Err(RepoError::Store(
            StoreError::IdempotencyConflict { .. } | StoreError::Conflict { .. },
        )) => {
            return match replay_start(&s, &claims, &workflow_id, &id, &req).await? {
                Some(answer) => Ok(answer),
                None => Err(repo_error(RepoError::Store(StoreError::Backend(
                    "the execution of this Idempotency-Key could not be read".into(),
                )))),
            }
        }
        Err(e) => return Err(repo_error(e)),
    };
    shared::telemetry::metrics::emit(
        "workflow_executions_total",
        if replayed { 0.0 } else { 1.0 },
        shared::telemetry::metrics::Unit::Count,
        &[("tenant", &claims.tenant), ("event", "started")],
    );
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(started_answer(
        status,
        &id,
        &workflow_id,
        version.version,
        "running",
        replayed,
    ))
}

type StartAnswer = (
    StatusCode,
    [(axum::http::HeaderName, String); 1],
    Json<Value>,
);

fn started_answer(
    status: StatusCode,
    id: &str,
    workflow_id: &str,
    version: u32,
    execution_status: &str,
    replayed: bool,
) -> StartAnswer {
    (
        status,
        [(axum::http::header::LOCATION, format!("/executions/{id}"))],
        Json(json!({
            "execution_id": id,
            "workflow_id": workflow_id,
            "workflow_version": version,
            "status": execution_status,
            "replayed": replayed,
        })),
    )
}

/// The answer to a start whose Idempotency-Key already started execution `id`: 200 with its
/// current status, or 422 when the key was used for another input or version. `None` when no
/// such execution exists yet.
async fn replay_start(
    s: &ExecutionsState,
    claims: &Claims,
    workflow_id: &str,
    id: &str,
    req: &StartRequest,
) -> ApiResult<Option<StartAnswer>> {
    let stream = stream(claims, id)?;
    let state = s
        .services
        .repo
        .load(&stream)
        .await
        .map_err(repo_error)?
        .state;
    if state.status == ExecutionStatus::New {
        return Ok(None);
    }
    let input = if req.input.is_null() {
        json!({})
    } else {
        req.input.clone()
    };
    // The stored input came back through DynamoDB, which keeps numbers, not their JSON spelling
    // (10.0 returns as 10): compare it with the request's input after the same round trip.
    let stored_form = serde_dynamo::to_attribute_value::<_, serde_dynamo::AttributeValue>(&input)
        .and_then(serde_dynamo::from_attribute_value::<_, Value>)
        .unwrap_or(input);
    if state.input != stored_form || req.version.is_some_and(|v| v != state.workflow_version) {
        return Err(ApiError::unprocessable(
            "idempotency-key-reused",
            "this Idempotency-Key was already used to start a different execution; use a new key",
        ));
    }
    Ok(Some(started_answer(
        StatusCode::OK,
        id,
        workflow_id,
        state.workflow_version,
        state.status.as_str(),
        true,
    )))
}

/// The execution as its events say now (consistent read), not the eventually consistent listing.
async fn load(
    s: &ExecutionsState,
    claims: &Claims,
    id: &str,
) -> ApiResult<(StreamId, ExecutionState)> {
    let stream = stream(claims, id)?;
    let loaded = s.services.repo.load(&stream).await.map_err(repo_error)?;
    if loaded.state.status == ExecutionStatus::New {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    Ok((stream, loaded.state))
}

async fn get_one(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (_, state) = load(&s, &claims, &id).await?;
    let mut body = json!(Summary::of(&state));
    body["input"] = state.input.clone();
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
    if let Some(status) = q.status.as_deref() {
        if !matches!(status, "running" | "succeeded" | "failed" | "cancelled") {
            return Err(ApiError::bad_request(
                "invalid-query",
                "`status` is one of running, succeeded, failed, cancelled",
            ));
        }
    }
    let page = s
        .services
        .projections
        .list(
            &claims.tenant,
            q.workflow_id.as_deref(),
            q.status.as_deref(),
            q.limit.unwrap_or(50),
            q.cursor.as_deref(),
        )
        .await
        .map_err(|e| match e {
            shared::executions::projection::ProjectionError::BadCursor(m) => {
                ApiError::bad_request("invalid-cursor", m)
            }
            other => ApiError::internal(other),
        })?;
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
    let stream = stream(&claims, &id)?;
    let page = s
        .services
        .repo
        .store()
        .read_page(
            &stream,
            q.from.unwrap_or(1).max(1),
            q.limit.unwrap_or(100).clamp(1, 500),
        )
        .await
        .map_err(ApiError::from)?;
    if page.events.is_empty() && q.from.unwrap_or(1) <= 1 {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
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

/// Appends the event `command` derives from the current state, re-reading when another writer
/// got there first. `command` returns the refusal (409) when the state does not allow it.
async fn command(
    s: &ExecutionsState,
    claims: &Claims,
    id: &str,
    command: impl Fn(&ExecutionState) -> ApiResult<E>,
) -> ApiResult<Json<Value>> {
    for attempt in 1..=COMMAND_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(shared::aws::transact::pause(attempt - 1)).await;
        }
        let (stream, state) = load(s, claims, id).await?;
        let event = command(&state)?;
        let cause = Cause {
            tenant: &claims.tenant,
            actor: &claims.sub,
            correlation_id: id,
            causation_id: None,
            at: Utc::now(),
        };
        match s
            .services
            .repo
            .append(
                &stream,
                ExpectedVersion::Exact(state.version),
                vec![event.clone()],
                &cause,
                None,
            )
            .await
        {
            Ok(r) => {
                return Ok(Json(
                    json!({"execution_id": id, "accepted": event.event_type(), "version": r.last_version}),
                ))
            }
            Err(RepoError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(repo_error(e)),
        }
    }
    Err(ApiError::conflict(
        "busy",
        "the execution kept changing; try again",
    ))
}

fn not_running(state: &ExecutionState) -> ApiError {
    ApiError::conflict(
        "not-running",
        format!("the execution is {}", state.status.as_str()),
    )
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
    let by = claims.sub.clone();
    let r = command(&s, &claims, &id, |state| {
        if state.status != ExecutionStatus::Running {
            return Err(not_running(state));
        }
        Ok(E::ExecutionCancelled {
            by: by.clone(),
            reason: reason.clone(),
        })
    })
    .await?;
    shared::telemetry::metrics::emit(
        "workflow_executions_total",
        1.0,
        shared::telemetry::metrics::Unit::Count,
        &[("tenant", &claims.tenant), ("event", "cancelled")],
    );
    Ok((StatusCode::ACCEPTED, r))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    decision: Decision,
    comment: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Approve,
    Reject,
}

async fn decide_approval(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path((id, key)): Path<(String, String)>,
    Json(req): Json<ApprovalRequest>,
) -> ApiResult<impl IntoResponse> {
    let by = claims.sub.clone();
    let r = command(&s, &claims, &id, |state| {
        if let Some(def) = state.definition() {
            if !def.may_approve(&claims.roles) {
                return Err(ApiError::forbidden(format!(
                    "deciding this workflow's approvals needs one of the roles {:?} (or admin)",
                    def.approver_roles()
                )));
            }
        }
        if state.status != ExecutionStatus::Running {
            return Err(not_running(state));
        }
        match state.steps.get(&key) {
            Some(step) if step.status == StepStatus::AwaitingApproval => {}
            Some(_) => {
                return Err(ApiError::conflict(
                    "not-awaiting-approval",
                    format!("step {key} is not waiting for a decision"),
                ))
            }
            None => {
                return Err(ApiError::not_found(format!(
                    "execution {id} has no step {key} waiting for a decision"
                )))
            }
        }
        let (key, by, comment) = (key.clone(), by.clone(), req.comment.clone());
        Ok(match req.decision {
            Decision::Approve => E::ApprovalGranted { key, by, comment },
            Decision::Reject => E::ApprovalRejected { key, by, comment },
        })
    })
    .await?;
    Ok((StatusCode::ACCEPTED, r))
}

async fn redrive(
    State(s): State<ExecutionsState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let by = claims.sub.clone();
    let r = command(&s, &claims, &id, |state| {
        if state.status != ExecutionStatus::Failed {
            return Err(ApiError::conflict(
                "not-failed",
                format!(
                    "only a failed execution can be redriven; this one is {}",
                    state.status.as_str()
                ),
            ));
        }
        Ok(E::ExecutionRedriven {
            by: by.clone(),
            reset_unfinished: true,
        })
    })
    .await?;
    Ok((StatusCode::ACCEPTED, r))
}
