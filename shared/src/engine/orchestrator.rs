//! The orchestrator (stream processor): for each execution touched by a batch, replay it, run
//! `decide`, append the decisions with optimistic concurrency, then update the read models.
//!
//! Idempotent by construction: decisions are a function of the stored history, so a redelivered
//! batch replays to a state whose decisions are already appended and plans nothing new.

use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use futures::FutureExt;

use super::states::StateCache;
use crate::domain::execution::{
    decide, ExecutionEvent as E, ExecutionState, ExecutionStatus, StepError, Summary,
};
use crate::events::{Envelope, ExpectedVersion, StoreError, StreamId};
use crate::executions::{repo::decode, stream_id, Cause, ExecutionRepo, Projections, RepoError};

/// Another writer (the worker, the API) may append between our read and our append; replan
/// this many times before giving the batch back for redelivery.
const CONFLICT_ATTEMPTS: usize = 8;

pub struct Orchestrator {
    pub repo: ExecutionRepo,
    pub projections: Projections,
    pub usage: Option<crate::executions::usage::UsageLedger>,
    /// Recently seen executions' states (see [`StateCache`]).
    pub cache: StateCache,
}

impl Orchestrator {
    pub fn new(repo: ExecutionRepo, projections: Projections) -> Self {
        Self {
            repo,
            projections,
            usage: None,
            cache: Default::default(),
        }
    }

    async fn load(&self, stream: &StreamId) -> Result<crate::executions::Loaded, RepoError> {
        self.cache.load(&self.repo, stream).await
    }
}

/// What one turn did, for logs, metrics and benchmarks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Turn {
    pub appended: usize,
    pub replayed: u64,
    pub conflicts: usize,
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("read model: {0}")]
    Projection(String),
    #[error("the orchestrator panicked: {0}")]
    Panicked(String),
}

impl TurnError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Repo(r) => r.is_transient(),
            Self::Projection(_) => true,
            Self::Panicked(_) => false,
        }
    }
}

impl Orchestrator {
    /// Handles the batch's events of one execution stream (in stream order).
    pub async fn turn(
        &self,
        stream: &StreamId,
        batch: &[Envelope],
        now: DateTime<Utc>,
    ) -> Result<Turn, TurnError> {
        for envelope in batch {
            if let Ok(E::TimerStarted {
                timer_id, due_at, ..
            }) = decode(envelope)
            {
                self.projections
                    .put_timer(stream.as_str(), &timer_id, due_at)
                    .await
                    .map_err(|e| TurnError::Projection(e.to_string()))?;
            }
        }
        let cause_id = batch.last().map(|e| e.event_id.clone());
        let mut turn = Turn::default();
        let mut loaded = self.load(stream).await?;
        turn.replayed = loaded.replayed;
        let mut state = loaded.state.clone();
        let mut ended_now = false;
        let mut settled = false;
        for attempt in 0..CONFLICT_ATTEMPTS {
            let (next, events) = decide(&state, now);
            if events.is_empty() {
                settled = true;
                break;
            }
            let count = events.len();
            let tenant = stream.tenant().to_owned();
            let cause = Cause {
                tenant: &tenant,
                actor: "orchestrator",
                correlation_id: &state.id,
                causation_id: cause_id.as_deref(),
                at: now,
            };
            match self
                .repo
                .append(
                    stream,
                    ExpectedVersion::Exact(state.version),
                    events,
                    &cause,
                    None,
                )
                .await
            {
                Ok(r) => {
                    turn.appended += count;
                    if next.status.is_terminal() && !state.status.is_terminal() {
                        ended_now = true;
                        // Counted once: only the turn whose append ended the execution gets here.
                        crate::telemetry::metrics::emit(
                            "workflow_executions_total",
                            1.0,
                            crate::telemetry::metrics::Unit::Count,
                            &[("tenant", stream.tenant()), ("event", next.status.as_str())],
                        );
                    }
                    state = next;
                    state.version = r.last_version;
                    settled = true;
                    break;
                }
                Err(RepoError::Store(StoreError::Conflict { .. })) => {
                    turn.conflicts += 1;
                    // Writers that collided once tend to collide again at once: spread out.
                    let jitter = uuid::Uuid::new_v4().as_u128() % 10;
                    let pause = 5 * (attempt as u64 + 1) + jitter as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                    loaded = self.load(stream).await?;
                    turn.replayed += loaded.replayed;
                    state = loaded.state.clone();
                }
                Err(RepoError::Store(StoreError::TooLarge { detail, .. })) => {
                    let error = StepError::new(
                        "StateTooLarge",
                        {
                            tracing::warn!(stream = %stream, %detail, "events too large");
                            "the next events do not fit in one DynamoDB item (400 KB)".to_owned()
                        },
                        false,
                    );
                    self.fail(stream, Some(&state), "", error, now).await?;
                    return Ok(turn);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !settled {
            // Decisions are still unwritten and no other record may come to plan them again (the
            // racing writer's own record may be one this function is not sent): the batch goes
            // back for redelivery from here.
            return Err(TurnError::Repo(RepoError::Store(StoreError::Conflict {
                stream_id: stream.clone(),
                expected: ExpectedVersion::Exact(state.version),
                actual: state.version,
            })));
        }
        turn.status = state.status.as_str().to_owned();
        if state.status == ExecutionStatus::New {
            return Ok(turn);
        }
        // Its end came in this batch (a cancel from the API) or from this turn.
        let ended_now = ended_now
            || batch.iter().any(|e| {
                matches!(
                    e.event_type.as_str(),
                    "ExecutionSucceeded" | "ExecutionFailed" | "ExecutionCancelled"
                )
            });
        self.project(stream, &state, batch, now, ended_now).await?;
        loaded.state = state;
        let snapshot_version = self.repo.maybe_snapshot(stream, &loaded).await?;
        self.cache.remember(stream, &loaded.state, snapshot_version);
        Ok(turn)
    }

    /// Read models and the consequences of an ending: summary, timers, the parent's step.
    async fn project(
        &self,
        stream: &StreamId,
        state: &ExecutionState,
        batch: &[Envelope],
        now: DateTime<Utc>,
        ended_now: bool,
    ) -> Result<(), TurnError> {
        let tenant = stream.tenant();
        if let Some(ledger) = &self.usage {
            for envelope in batch {
                let (step, usage) = match decode(envelope) {
                    Ok(
                        E::StepSucceeded {
                            step,
                            usage: Some(u),
                            ..
                        }
                        | E::StepFailed {
                            step,
                            usage: Some(u),
                            ..
                        },
                    ) => (step, u),
                    _ => continue,
                };
                let record = crate::executions::usage::UsageRecord {
                    execution_id: state.id.clone(),
                    workflow_id: state.workflow_id.clone(),
                    step,
                    model: usage.model.clone().unwrap_or_else(|| "unknown".into()),
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cost_usd: usage.cost_usd,
                    at: envelope.metadata.occurred_at,
                };
                ledger
                    .record(tenant, envelope.version, &record)
                    .await
                    .map_err(TurnError::Projection)?;
            }
        }
        self.projections
            .refresh_summary(tenant, &Summary::of(state).listing())
            .await
            .map_err(|e| TurnError::Projection(e.to_string()))?;
        self.cancel_children(stream, state, batch, now, ended_now)
            .await;
        if !state.status.is_terminal() {
            return Ok(());
        }
        for (timer_id, t) in state.timers.iter().filter(|(_, t)| !t.fired) {
            let row = crate::executions::TimerRow::new(stream.as_str(), timer_id, t.due_at);
            self.projections
                .delete_timer(&row)
                .await
                .map_err(|e| TurnError::Projection(e.to_string()))?;
        }
        let _ = batch;
        if let Some(parent) = &state.parent {
            let result = match state.status {
                ExecutionStatus::Succeeded => Ok(state.output.clone().unwrap_or_default()),
                _ => Err(state
                    .error
                    .clone()
                    .map(|e| StepError::new(&format!("Child{}", e.kind), e.message, false))
                    .unwrap_or_else(|| {
                        StepError::new("ChildFailed", "the child execution failed", false)
                    })),
            };
            // The key's last segment is the step name (`each[3]/call` → `call`).
            let step = parent.key.rsplit('/').next().unwrap_or_default().to_owned();
            let (key, epoch, attempt) = (parent.key.clone(), parent.epoch, parent.attempt);
            let event = E::outcome(key, step, epoch, attempt, result);
            let parent_stream = stream_id(tenant, &parent.execution_id).map_err(RepoError::from)?;
            let cause = Cause {
                tenant,
                actor: "orchestrator",
                correlation_id: &parent.execution_id,
                causation_id: None,
                at: now,
            };
            let idempotency = format!("child:{}:{}", state.id, state.version);
            match self
                .repo
                .append_any(
                    &parent_stream,
                    vec![event],
                    &cause,
                    Some(idempotency.clone()),
                )
                .await
            {
                // The child's output does not fit the parent's outcome event: the parent's step
                // fails, clearly, rather than waiting for an outcome that can never be written.
                Err(RepoError::Store(StoreError::TooLarge { detail, .. })) => {
                    tracing::warn!(%detail, "child output too large for its parent");
                    let error = StepError::new(
                        "ChildOutputTooLarge",
                        format!(
                            "child execution {}'s output does not fit in one event (400 KB)",
                            state.id
                        ),
                        false,
                    );
                    let step = parent.key.rsplit('/').next().unwrap_or_default().to_owned();
                    let failed = E::outcome(parent.key.clone(), step, epoch, attempt, Err(error));
                    self.repo
                        .append_any(&parent_stream, vec![failed], &cause, Some(idempotency))
                        .await?;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Child executions must not outlive the step that started them: when an execution ends,
    /// its unfinished subworkflow steps' children are cancelled, and so are those of attempts
    /// abandoned or timed out in this batch (a cancelled family stops as a whole, at every depth,
    /// each child in its turn). A child's id is derived from its attempt, so even a child whose
    /// start was never recorded here is found. Best effort: a failure is logged and the rest of
    /// the ending goes on (the parent's own parent is still told).
    async fn cancel_children(
        &self,
        stream: &StreamId,
        state: &ExecutionState,
        batch: &[Envelope],
        now: DateTime<Utc>,
        ended_now: bool,
    ) {
        use crate::domain::definition::StepKind;
        let is_subworkflow = |step: &str| {
            state
                .definition()
                .and_then(|d| d.steps.get(step))
                .is_some_and(|s| matches!(s.kind, StepKind::Subworkflow { .. }))
        };
        let child_of = |key: &str, epoch: u32, attempt: u32| {
            crate::engine::derived_id(&[stream.as_str(), &format!("{key}@{epoch}.{attempt}")])
        };
        let mut doomed: Vec<String> = Vec::new();
        for envelope in batch {
            match decode(envelope) {
                Ok(E::StepsAbandoned { keys, .. }) => {
                    for key in keys {
                        if let Some(s) = state.steps.get(&key).filter(|s| is_subworkflow(&s.step)) {
                            doomed.push(child_of(&key, s.epoch, s.attempt));
                        }
                    }
                }
                Ok(E::TimerFired { timer_id }) => {
                    if let Some(t) = state
                        .timers
                        .get(&timer_id)
                        .filter(|t| t.purpose == crate::domain::execution::TimerPurpose::Timeout)
                    {
                        let step = state.steps.get(&t.key).map(|s| s.step.as_str());
                        if step.is_some_and(is_subworkflow) {
                            doomed.push(child_of(&t.key, t.epoch, t.attempt));
                        }
                    }
                }
                _ => {}
            }
        }
        if ended_now && state.status.is_terminal() {
            for (key, s) in &state.steps {
                if s.status.is_pending() && is_subworkflow(&s.step) {
                    doomed.push(child_of(key, s.epoch, s.attempt));
                }
            }
        }
        let reason = format!("its parent execution {} no longer waits for it", state.id);
        for child in doomed {
            if let Err(e) =
                cancel_running(&self.repo, stream.tenant(), &child, "parent", &reason, now).await
            {
                tracing::warn!(parent = %stream, child, error = %e, "could not cancel a child execution");
            }
        }
    }

    /// Ends an execution that cannot go on, with the reason (never blocks the stream).
    /// Fails the execution at exactly `state.version`: `false` (nothing written) when the stream
    /// has moved since, so a check that raced a live event never fails a moving execution.
    pub async fn fail_at(
        &self,
        stream: &StreamId,
        state: &ExecutionState,
        error: StepError,
        now: DateTime<Utc>,
    ) -> Result<bool, TurnError> {
        let tenant = stream.tenant().to_owned();
        let cause = Cause {
            tenant: &tenant,
            actor: "orchestrator",
            correlation_id: &state.id,
            causation_id: None,
            at: now,
        };
        match self
            .repo
            .append(
                stream,
                ExpectedVersion::Exact(state.version),
                vec![E::ExecutionFailed { error, step: None }],
                &cause,
                Some(format!("orchestration-failure:{}", state.epoch)),
            )
            .await
        {
            Ok(r) => {
                if !r.replayed {
                    crate::telemetry::metrics::emit(
                        "workflow_executions_total",
                        1.0,
                        crate::telemetry::metrics::Unit::Count,
                        &[("tenant", stream.tenant()), ("event", "failed")],
                    );
                }
                Ok(true)
            }
            Err(RepoError::Store(
                StoreError::Conflict { .. } | StoreError::IdempotencyConflict { .. },
            )) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// For a stream whose events cannot all be decoded: whether, by event types alone, it has
    /// ended since its last redrive (so nothing more is appended to it).
    async fn ended_by_types(&self, stream: &StreamId) -> bool {
        let Ok(events) = self.repo.store().read_from(stream, 1).await else {
            return false;
        };
        events
            .iter()
            .rev()
            .map(|e| e.event_type.as_str())
            .find(|t| {
                matches!(
                    *t,
                    "ExecutionSucceeded"
                        | "ExecutionFailed"
                        | "ExecutionCancelled"
                        | "ExecutionRedriven"
                )
            })
            .is_some_and(|t| t != "ExecutionRedriven")
    }

    /// Fails the execution with `error`. `state` when the caller has it; otherwise it is read,
    /// and if even that fails (an unreadable event), the failure is keyed by `record` (the record
    /// that failed, the same on every redelivery) so it is appended once.
    pub async fn fail(
        &self,
        stream: &StreamId,
        state: Option<&ExecutionState>,
        record: &str,
        error: StepError,
        now: DateTime<Utc>,
    ) -> Result<(), TurnError> {
        let read;
        let state = match state {
            Some(s) => Some(s),
            None => {
                read = AssertUnwindSafe(self.repo.load(stream))
                    .catch_unwind()
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|l| l.state);
                read.as_ref()
            }
        };
        // Nothing is appended after a terminal event; a redriven execution that fails again is
        // failed again (keyed per epoch).
        let key = match state {
            Some(s) if s.status.is_terminal() => return Ok(()),
            Some(s) => format!("orchestration-failure:{}", s.epoch),
            None if self.ended_by_types(stream).await => return Ok(()),
            None => format!("orchestration-failure:record:{record}"),
        };
        let correlation = state.map(|s| s.id.clone()).unwrap_or_default();
        let tenant = stream.tenant().to_owned();
        let cause = Cause {
            tenant: &tenant,
            actor: "orchestrator",
            correlation_id: &correlation,
            causation_id: None,
            at: now,
        };
        let appended = self
            .repo
            .append_any(
                stream,
                vec![E::ExecutionFailed { error, step: None }],
                &cause,
                Some(key),
            )
            .await;
        match appended {
            Ok(r) if !r.replayed => crate::telemetry::metrics::emit(
                "workflow_executions_total",
                1.0,
                crate::telemetry::metrics::Unit::Count,
                &[("tenant", stream.tenant()), ("event", "failed")],
            ),
            // Already failed by an earlier delivery (with the same or another reason).
            Ok(_) | Err(RepoError::Store(StoreError::IdempotencyConflict { .. })) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// Cancels execution `id` of `tenant` if it is running, at the version read (a child that ends
/// meanwhile gets nothing after its end); `Ok(false)` when it was not running (or does not
/// exist yet).
pub async fn cancel_running(
    repo: &crate::executions::ExecutionRepo,
    tenant: &str,
    id: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, RepoError> {
    let child_stream = stream_id(tenant, id)?;
    let cause = Cause {
        tenant,
        actor: "orchestrator",
        correlation_id: id,
        causation_id: None,
        at: now,
    };
    for _ in 0..CONFLICT_ATTEMPTS {
        let loaded = repo.load(&child_stream).await?;
        if loaded.state.status != ExecutionStatus::Running {
            return Ok(false);
        }
        let event = E::ExecutionCancelled {
            by: by.into(),
            reason: Some(reason.to_owned()),
        };
        match repo
            .append(
                &child_stream,
                ExpectedVersion::Exact(loaded.state.version),
                vec![event],
                &cause,
                None,
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(RepoError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RepoError::Store(StoreError::Backend(format!(
        "execution {id} kept moving while being cancelled"
    ))))
}
