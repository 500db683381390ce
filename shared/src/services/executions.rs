//! Executions: start (idempotent with a key), read, list, history, and the commands cancel,
//! approve or reject, and redrive. Commands append to the execution's stream with optimistic
//! concurrency; the orchestrator does the rest.

use axum::http::StatusCode;
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::Claims;
use crate::domain::execution::{
    evolve, ExecutionEvent as E, ExecutionState, ExecutionStatus, StepStatus, Summary,
};
use crate::engine::Services;
use crate::events::{Envelope, ExpectedVersion, StoreError, StreamId};
use crate::executions::projection::{Listing, ProjectionError};
use crate::executions::{stream_id, Cause, RepoError};
use crate::http::{ApiError, ApiResult};
use crate::workflows::{WorkflowError, WorkflowStatus};

use super::workflows::workflow_error;

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// A command that loses the race with the orchestrator or a worker (a busy map appends often)
/// re-reads and tries again this often, after a jittered pause (about 6 s at most in all).
const COMMAND_ATTEMPTS: u32 = 12;
/// Events per history page when the caller names none, and the most one page holds.
pub const DEFAULT_EVENTS_PAGE: u32 = 100;
pub const MAX_EVENTS_PAGE: u32 = 500;
/// The statuses listings filter on.
pub const STATUSES: [&str; 4] = ["running", "succeeded", "failed", "cancelled"];

fn repo_error(e: RepoError) -> ApiError {
    match e {
        RepoError::Store(s) => s.into(),
        other => ApiError::internal(other),
    }
}

fn stream(claims: &Claims, id: &str) -> ApiResult<StreamId> {
    stream_id(&claims.tenant, id).map_err(|_| ApiError::not_found(format!("no execution {id}")))
}

/// A key as the caller sent it: 1-128 visible ASCII characters.
pub fn idempotency_key(raw: Option<&str>) -> ApiResult<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    let key = raw.trim();
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

#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub input: Value,
    pub version: Option<u32>,
    /// Already checked with [`idempotency_key`].
    pub idempotency_key: Option<String>,
}

impl StartRequest {
    fn input(&self) -> Value {
        if self.input.is_null() {
            json!({})
        } else {
            self.input.clone()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Started {
    pub execution_id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    pub status: String,
    /// True when an earlier request with the same key started it.
    pub replayed: bool,
}

pub async fn start(
    s: &Services,
    claims: &Claims,
    workflow_id: &str,
    req: &StartRequest,
) -> ApiResult<Started> {
    // With a key, the execution id is derived from it: a retry names the same execution, and is
    // answered with that execution as it is now (even after the workflow changed or was archived).
    let derived = req
        .idempotency_key
        .as_ref()
        .map(|k| crate::engine::derived_id(&[&claims.tenant, workflow_id, k]));
    if let Some(id) = &derived {
        if let Some(answer) = replay_start(s, claims, workflow_id, id, req).await? {
            return Ok(answer);
        }
    }
    let wf = s
        .workflows
        .get(&claims.tenant, workflow_id)
        .await
        .map_err(workflow_error)?;
    if wf.status == WorkflowStatus::Archived {
        return Err(ApiError::conflict(
            "workflow-archived",
            format!("workflow {workflow_id} is archived; it starts no new executions"),
        ));
    }
    let pinned = req.version.unwrap_or(wf.latest_version);
    let version = match s
        .workflows
        .version(&claims.tenant, workflow_id, pinned)
        .await
    {
        Err(e @ WorkflowError::NoVersion { .. }) => {
            return Err(ApiError::unprocessable("no-such-version", e.to_string()))
        }
        other => other.map_err(workflow_error)?,
    };
    let input = req.input();
    crate::http::storable(&input)?;
    if let Some(problem) = crate::domain::validate::input_size_problem(&input) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input-too-large",
            "Input too large",
            problem,
        ));
    }
    let problems = crate::domain::validate_input(&version.definition, &input);
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
    let stream = stream(claims, &id)?;
    let cause = Cause {
        tenant: &claims.tenant,
        actor: &claims.sub,
        correlation_id: &id,
        causation_id: None,
        at: Utc::now(),
    };
    let event = crate::engine::started(&id, &version, input, None);
    let result = s
        .repo
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event.clone()],
            &cause,
            req.idempotency_key.clone(),
        )
        .await;
    if let Ok(r) = &result {
        if !r.replayed {
            // The first summary, so the execution is listed (and watched by the stalled-execution
            // sweep) even if its first record never reaches the orchestrator. Best effort: the
            // orchestrator writes it again with its first turn.
            let mut state = ExecutionState::default();
            evolve(&mut state, r.first_version, cause.at, &event);
            let summary = Summary::of(&state).listing();
            if let Err(e) = s.projections.write_summary(&claims.tenant, &summary).await {
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
            return match replay_start(s, claims, workflow_id, &id, req).await? {
                Some(answer) => Ok(answer),
                None => Err(repo_error(RepoError::Store(StoreError::Backend(
                    "the execution of this idempotency key could not be read".into(),
                )))),
            }
        }
        Err(e) => return Err(repo_error(e)),
    };
    crate::telemetry::metrics::emit(
        "workflow_executions_total",
        if replayed { 0.0 } else { 1.0 },
        crate::telemetry::metrics::Unit::Count,
        &[("tenant", &claims.tenant), ("event", "started")],
    );
    Ok(Started {
        execution_id: id,
        workflow_id: workflow_id.to_owned(),
        workflow_version: version.version,
        status: "running".into(),
        replayed,
    })
}

/// The answer to a start whose key already started execution `id`: that execution as it is now,
/// or 422 when the key was used for another input or version. `None` when no such execution
/// exists yet.
async fn replay_start(
    s: &Services,
    claims: &Claims,
    workflow_id: &str,
    id: &str,
    req: &StartRequest,
) -> ApiResult<Option<Started>> {
    let stream = stream(claims, id)?;
    let state = s.repo.load(&stream).await.map_err(repo_error)?.state;
    if state.status == ExecutionStatus::New {
        return Ok(None);
    }
    let input = req.input();
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
    Ok(Some(Started {
        execution_id: id.to_owned(),
        workflow_id: workflow_id.to_owned(),
        workflow_version: state.workflow_version,
        status: state.status.as_str().to_owned(),
        replayed: true,
    }))
}

/// The execution as its events say now (consistent read), not the eventually consistent listing.
pub async fn load(
    s: &Services,
    claims: &Claims,
    id: &str,
) -> ApiResult<(StreamId, ExecutionState)> {
    let stream = stream(claims, id)?;
    let loaded = s.repo.load(&stream).await.map_err(repo_error)?;
    if loaded.state.status == ExecutionStatus::New {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    Ok((stream, loaded.state))
}

/// The execution's view: its summary with every step, and its input.
pub async fn get(s: &Services, claims: &Claims, id: &str) -> ApiResult<(Summary, Value)> {
    let (_, state) = load(s, claims, id).await?;
    Ok((Summary::of(&state), state.input))
}

/// One page of the tenant's executions (of one workflow, with one status), newest first.
pub async fn list(
    s: &Services,
    claims: &Claims,
    workflow_id: Option<&str>,
    status: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<Listing<Summary>> {
    if let Some(status) = status {
        if !STATUSES.contains(&status) {
            return Err(ApiError::bad_request(
                "invalid-query",
                "`status` is one of running, succeeded, failed, cancelled",
            ));
        }
    }
    let mut page = s
        .projections
        .list(
            &claims.tenant,
            workflow_id,
            status,
            limit.unwrap_or(super::workflows::DEFAULT_PAGE),
            cursor,
        )
        .await
        .map_err(|e| match e {
            ProjectionError::BadCursor(m) => ApiError::bad_request("invalid-cursor", m),
            other => ApiError::internal(other),
        })?;
    with_live_progress(s, &claims.tenant, &mut page.items).await;
    Ok(page)
}

/// Executions read at once to bring listed running ones up to date, how many per page at most,
/// and how long a page waits for them: past either, listed ones keep their stored progress.
const LIVE_PROGRESS_CONCURRENCY: usize = 8;
const LIVE_PROGRESS_MAX: usize = 25;
const LIVE_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A stored summary's progress (current steps, steps completed) is as of the last change of
/// what it shows otherwise (see `Projections::refresh_summary`): running executions in a page
/// are read from their events (the first [`LIVE_PROGRESS_MAX`], within [`LIVE_PROGRESS_WAIT`]), so
/// listings show where they are now. An ended execution's summary is final. One that cannot be
/// read in time, or has ended meanwhile (its summary follows shortly; the page keeps what its
/// status filter found), keeps its stored summary.
async fn with_live_progress(s: &Services, tenant: &str, items: &mut [Summary]) {
    use futures::StreamExt;
    let until = tokio::time::Instant::now() + LIVE_PROGRESS_WAIT;
    let running: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.status == ExecutionStatus::Running.as_str())
        .map(|(n, i)| (n, i.execution_id.clone()))
        .take(LIVE_PROGRESS_MAX)
        .collect();
    let fresh: Vec<(usize, Option<Summary>)> = futures::stream::iter(running)
        .map(|(n, id)| async move {
            let loaded = match stream_id(tenant, &id) {
                Ok(stream) => tokio::time::timeout_at(until, s.repo.load(&stream))
                    .await
                    .map_err(|_| "not read in time".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            match loaded {
                Ok(l) if l.state.status == ExecutionStatus::Running => {
                    (n, Some(Summary::of(&l.state).listing()))
                }
                Ok(_) => (n, None),
                Err(e) => {
                    tracing::warn!(execution = %id, error = %e, "listing: live progress not read; stored summary shown");
                    (n, None)
                }
            }
        })
        .buffered(LIVE_PROGRESS_CONCURRENCY)
        .collect()
        .await;
    for (n, summary) in fresh {
        if let Some(summary) = summary {
            items[n] = summary;
        }
    }
}

/// One page of an execution's events from version `from`; `next` continues it.
pub struct History {
    pub events: Vec<Envelope>,
    pub next: Option<u64>,
}

pub async fn history(
    s: &Services,
    claims: &Claims,
    id: &str,
    from: Option<u64>,
    limit: Option<u32>,
) -> ApiResult<History> {
    let stream = stream(claims, id)?;
    let from = from.unwrap_or(1).max(1);
    let page = s
        .repo
        .store()
        .read_page(
            &stream,
            from,
            limit
                .unwrap_or(DEFAULT_EVENTS_PAGE)
                .clamp(1, MAX_EVENTS_PAGE),
        )
        .await
        .map_err(ApiError::from)?;
    if page.events.is_empty() && from <= 1 {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    Ok(History {
        events: page.events.into_iter().flat_map(as_shown).collect(),
        next: page.next,
    })
}

/// An event as the history shows it: an outcome carrying its worker's decisions (one stored
/// event, one version) as the outcome and then each decision, with event ids `<id>.1`, `<id>.2`…
fn as_shown(envelope: Envelope) -> Vec<Envelope> {
    let event = match crate::executions::repo::decode(&envelope) {
        Ok(e @ E::StepSucceeded { .. }) if e.parts().nth(1).is_some() => e,
        _ => return vec![envelope],
    };
    event
        .parts()
        .enumerate()
        .map(|(n, part)| {
            let (event_type, payload) = part.alone().into_parts();
            Envelope {
                event_id: if n == 0 {
                    envelope.event_id.clone()
                } else {
                    format!("{}.{n}", envelope.event_id)
                },
                event_type,
                payload,
                ..envelope.clone()
            }
        })
        .collect()
}

/// A command the execution took: the event it appended and the stream's version after it.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub execution_id: String,
    pub accepted: &'static str,
    pub version: u64,
}

/// Appends the event `command` derives from the current state, re-reading when another writer
/// got there first. `command` returns the refusal (409) when the state does not allow it.
async fn command(
    s: &Services,
    claims: &Claims,
    id: &str,
    command: impl Fn(&ExecutionState) -> ApiResult<E>,
) -> ApiResult<Accepted> {
    for attempt in 1..=COMMAND_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(crate::aws::transact::pause(attempt - 1)).await;
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
                return Ok(Accepted {
                    execution_id: id.to_owned(),
                    accepted: event.event_type(),
                    version: r.last_version,
                })
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

pub async fn cancel(
    s: &Services,
    claims: &Claims,
    id: &str,
    reason: Option<String>,
) -> ApiResult<Accepted> {
    let by = claims.sub.clone();
    let accepted = command(s, claims, id, |state| {
        if state.status != ExecutionStatus::Running {
            return Err(not_running(state));
        }
        Ok(E::ExecutionCancelled {
            by: by.clone(),
            reason: reason.clone(),
        })
    })
    .await?;
    crate::telemetry::metrics::emit(
        "workflow_executions_total",
        1.0,
        crate::telemetry::metrics::Unit::Count,
        &[("tenant", &claims.tenant), ("event", "cancelled")],
    );
    Ok(accepted)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// Approves or rejects step `key`, which must be waiting for a decision; only the workflow's
/// approver roles (or an admin) may decide.
pub async fn decide(
    s: &Services,
    claims: &Claims,
    id: &str,
    key: &str,
    decision: Decision,
    comment: Option<String>,
) -> ApiResult<Accepted> {
    let by = claims.sub.clone();
    command(s, claims, id, |state| {
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
        match state.steps.get(key) {
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
        let (key, by, comment) = (key.to_owned(), by.clone(), comment.clone());
        Ok(match decision {
            Decision::Approve => E::ApprovalGranted { key, by, comment },
            Decision::Reject => E::ApprovalRejected { key, by, comment },
        })
    })
    .await
}

pub async fn redrive(s: &Services, claims: &Claims, id: &str) -> ApiResult<Accepted> {
    let by = claims.sub.clone();
    command(s, claims, id, |state| {
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
    .await
}

/// Longest history [`step_details`] folds (a map of about 4,000 items); past it, read the
/// history page by page instead.
pub const MAX_FOLDED_EVENTS: u64 = 20_000;

/// Each step instance's input, tokens and cost, folded from the history page by page (the
/// execution view asks for it; listings never do).
pub async fn step_details(
    s: &Services,
    claims: &Claims,
    id: &str,
) -> ApiResult<std::collections::BTreeMap<String, crate::domain::execution::StepDetail>> {
    let stream = stream(claims, id)?;
    let mut details = std::collections::BTreeMap::new();
    let mut from = 1;
    loop {
        if from > MAX_FOLDED_EVENTS {
            return Err(ApiError::unprocessable(
                "history-too-long",
                format!(
                    "execution {id} has more than {MAX_FOLDED_EVENTS} events; read its steps' \
                     inputs and usage from its event history page by page"
                ),
            ));
        }
        let page = s
            .repo
            .store()
            .read_page(&stream, from, MAX_EVENTS_PAGE)
            .await
            .map_err(ApiError::from)?;
        let events = page
            .events
            .iter()
            .map(crate::executions::repo::decode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(repo_error)?;
        crate::domain::execution::fold_step_details(&mut details, &events);
        match page.next {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(details)
}
