//! Execution state and `evolve`: the fold of an execution's events. Pure and deterministic, so a
//! replay from events (or from a snapshot plus the tail) gives exactly the live state.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::events::{ExecutionEvent, ParentRef, StepError, TimerPurpose, Usage};
use crate::domain::definition::Definition;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// No `ExecutionStarted` yet.
    #[default]
    New,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for the step worker.
    Scheduled,
    /// Composite, wait or task in progress.
    Running,
    /// Waiting for a human decision.
    AwaitingApproval,
    /// Failed; a retry waits for its timer.
    RetryPending,
    /// The retry timer fired: the next attempt is due.
    RetryDue,
    Succeeded,
    /// Failed; `plan` decides between retry, catch and propagation.
    Failed,
    /// Failed and handled by a catch: the fallback step runs next.
    Caught,
    /// Its branch lost (`join: any`) or its parallel failed: nothing more happens to it, and
    /// a late result is ignored.
    Abandoned,
}

impl StepStatus {
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Self::Scheduled
                | Self::Running
                | Self::AwaitingApproval
                | Self::RetryPending
                | Self::RetryDue
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub step: String,
    pub epoch: u32,
    pub attempt: u32,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// When the current attempt was handed to the worker (a task no worker took up in time is
    /// known lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerState {
    pub key: String,
    pub epoch: u32,
    pub attempt: u32,
    pub purpose: TimerPurpose,
    pub due_at: DateTime<Utc>,
    pub fired: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionState {
    pub id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    /// Shared: every turn clones the state, and the definition is most of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<std::sync::Arc<Definition>>,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    pub status: ExecutionStatus,
    /// Step instances by key.
    pub steps: BTreeMap<String, StepState>,
    pub timers: BTreeMap<String, TimerState>,
    /// Redrives so far; instances of earlier epochs ignore late results.
    pub epoch: u32,
    /// The epoch the last resetting redrive began: instances of earlier epochs that it dropped
    /// are not brought back by their late events.
    #[serde(default)]
    pub reset_epoch: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    pub usage: Usage,
    /// Attempts given up while a worker may still hold their task (abandoned by `join: any`, or
    /// lost): a worker checks such an execution's state before it performs a task.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stray_tasks: u32,
    /// The version of the last event applied.
    pub version: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ExecutionState {
    /// Whether the task of attempt `attempt` of instance `key` in `epoch` is still wanted.
    pub fn wants_task(&self, key: &str, epoch: u32, attempt: u32) -> bool {
        self.status == ExecutionStatus::Running
            && self.steps.get(key).is_some_and(|s| {
                s.epoch == epoch
                    && s.attempt == attempt
                    && matches!(s.status, StepStatus::Scheduled | StepStatus::Running)
            })
    }

    pub fn definition(&self) -> Option<&Definition> {
        self.definition.as_deref()
    }

    /// The instance `key` if it is the current attempt of the current epoch.
    fn current(&mut self, key: &str, epoch: u32, attempt: u32) -> Option<&mut StepState> {
        self.steps
            .get_mut(key)
            .filter(|s| s.epoch == epoch && s.attempt == attempt)
    }

    /// Step instances still in progress, in key order.
    pub fn pending_steps(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|(_, s)| s.status.is_pending())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn instance(
    step: &str,
    epoch: u32,
    attempt: u32,
    status: StepStatus,
    at: DateTime<Utc>,
) -> StepState {
    StepState {
        step: step.to_owned(),
        epoch,
        attempt,
        status,
        output: None,
        error: None,
        caught_next: None,
        items: None,
        child_execution_id: None,
        started_at: at,
        ended_at: None,
        scheduled_at: None,
    }
}

/// Applies one event recorded at `version` and `at`. Results for an attempt or epoch that is no
/// longer current are ignored (a late worker, a timer that lost the race), as are events after the
/// execution ended, except a redrive.
pub fn evolve(state: &mut ExecutionState, version: u64, at: DateTime<Utc>, event: &ExecutionEvent) {
    // An outcome carrying the worker's decisions: they apply right after it, at its version.
    for part in event.parts() {
        evolve_one(state, version, at, part);
    }
}

fn evolve_one(state: &mut ExecutionState, version: u64, at: DateTime<Utc>, event: &ExecutionEvent) {
    state.version = version;
    use ExecutionEvent as E;
    if let E::StepSucceeded { usage: Some(u), .. } | E::StepFailed { usage: Some(u), .. } = event {
        // Money spent is counted even when the result arrives too late to be used.
        state.usage.input_tokens += u.input_tokens;
        state.usage.output_tokens += u.output_tokens;
        state.usage.cost_usd += u.cost_usd;
    }
    // After the end nothing changes but a redrive; a failed execution still takes the late
    // outcomes of its step instances, so that a redrive reuses finished work instead of doing it
    // again (the execution's status stays as it is: nothing is planned while it is not running).
    let late_outcome = state.status == ExecutionStatus::Failed
        && matches!(event, E::StepSucceeded { .. } | E::StepFailed { .. });
    if state.status.is_terminal() && !matches!(event, E::ExecutionRedriven { .. }) && !late_outcome
    {
        return;
    }
    match event {
        E::ExecutionStarted {
            execution_id,
            workflow_id,
            workflow_version,
            definition,
            input,
            parent,
        } => {
            if state.status != ExecutionStatus::New {
                return;
            }
            state.id = execution_id.clone();
            state.workflow_id = workflow_id.clone();
            state.workflow_version = *workflow_version;
            state.definition = Some(std::sync::Arc::new((**definition).clone()));
            state.input = input.clone();
            state.parent = parent.clone();
            state.status = ExecutionStatus::Running;
            state.started_at = Some(at);
        }
        E::StepStarted {
            key,
            step,
            epoch,
            attempt,
            items,
            child_execution_id,
        } => {
            if !state.steps.contains_key(key) && *epoch < state.reset_epoch {
                return; // a late start of an instance that a redrive dropped
            }
            let s = state
                .steps
                .entry(key.clone())
                .or_insert_with(|| instance(step, *epoch, *attempt, StepStatus::Running, at));
            if s.epoch == *epoch && s.attempt == *attempt && s.status == StepStatus::Scheduled {
                s.status = StepStatus::Running;
            }
            if items.is_some() {
                s.items = items.clone();
            }
            if child_execution_id.is_some() {
                s.child_execution_id = child_execution_id.clone();
            }
        }
        E::StepScheduled {
            key,
            step,
            epoch,
            attempt,
            ..
        } => {
            let replaces = state
                .steps
                .get(key)
                .is_none_or(|s| s.status == StepStatus::RetryDue || s.epoch < *epoch);
            if replaces {
                let started = state
                    .steps
                    .get(key)
                    .filter(|s| s.epoch == *epoch)
                    .map_or(at, |s| s.started_at);
                let mut s = instance(step, *epoch, *attempt, StepStatus::Scheduled, at);
                s.started_at = started;
                s.scheduled_at = Some(at);
                state.steps.insert(key.clone(), s);
            }
        }
        E::StepSucceeded {
            key,
            step,
            epoch,
            attempt,
            output,
            ..
        } => end_attempt(state, key, step, *epoch, *attempt, at, |s| {
            s.status = StepStatus::Succeeded;
            s.output = Some(output.clone());
        }),
        E::StepFailed {
            key,
            step,
            epoch,
            attempt,
            error,
            ..
        } => {
            if error.kind == "TaskLost" {
                state.stray_tasks += 1;
            }
            end_attempt(state, key, step, *epoch, *attempt, at, |s| {
                s.status = StepStatus::Failed;
                s.error = Some(error.clone());
            })
        }
        E::StepRetryScheduled {
            key,
            epoch,
            attempt,
            ..
        } => {
            if let Some(s) = state.current(key, *epoch, attempt.saturating_sub(1)) {
                if s.status == StepStatus::Failed {
                    s.status = StepStatus::RetryPending;
                }
            }
        }
        E::StepCaught { key, epoch, next } => {
            if let Some(s) = state.steps.get_mut(key).filter(|s| s.epoch == *epoch) {
                if s.status == StepStatus::Failed {
                    s.status = StepStatus::Caught;
                    s.caught_next = Some(next.clone());
                }
            }
        }
        E::TimerStarted {
            timer_id,
            key,
            epoch,
            attempt,
            purpose,
            due_at,
        } => {
            state.timers.entry(timer_id.clone()).or_insert(TimerState {
                key: key.clone(),
                epoch: *epoch,
                attempt: *attempt,
                purpose: *purpose,
                due_at: *due_at,
                fired: false,
            });
        }
        E::TimerFired { timer_id } => fire(state, timer_id, at),
        E::ApprovalRequested {
            key, step, epoch, ..
        } => {
            state
                .steps
                .entry(key.clone())
                .or_insert_with(|| instance(step, *epoch, 1, StepStatus::AwaitingApproval, at));
        }
        E::ApprovalGranted { key, by, comment } => {
            if let Some(s) = state
                .steps
                .get_mut(key)
                .filter(|s| s.status == StepStatus::AwaitingApproval)
            {
                s.status = StepStatus::Succeeded;
                s.output = Some(json!({"approved": true, "by": by, "comment": comment}));
                s.ended_at = Some(at);
            }
        }
        E::ApprovalRejected { key, by, comment } => {
            if let Some(s) = state
                .steps
                .get_mut(key)
                .filter(|s| s.status == StepStatus::AwaitingApproval)
            {
                s.status = StepStatus::Failed;
                let why = comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                s.error = Some(StepError::new(
                    "ApprovalRejected",
                    format!("rejected by {by}{why}"),
                    false,
                ));
                s.ended_at = Some(at);
            }
        }
        E::ExecutionSucceeded { output } => {
            state.status = ExecutionStatus::Succeeded;
            state.output = Some(output.clone());
            state.ended_at = Some(at);
        }
        E::ExecutionFailed { error, step } => {
            state.status = ExecutionStatus::Failed;
            state.error = Some(error.clone());
            state.failed_step = step.clone();
            state.ended_at = Some(at);
        }
        E::ExecutionCancelled { by, reason } => {
            state.status = ExecutionStatus::Cancelled;
            let why = reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            state.error = Some(StepError::new(
                "Cancelled",
                format!("cancelled by {by}{why}"),
                false,
            ));
            state.ended_at = Some(at);
        }
        E::StepsAbandoned { epoch, keys, .. } => {
            for key in keys {
                if let Some(s) = state.steps.get_mut(key) {
                    if s.epoch == *epoch && s.status.is_pending() {
                        if matches!(s.status, StepStatus::Scheduled | StepStatus::Running) {
                            state.stray_tasks += 1;
                        }
                        s.status = StepStatus::Abandoned;
                        s.ended_at = Some(at);
                    }
                }
            }
        }
        E::ExecutionRedriven {
            reset_unfinished, ..
        } => {
            if state.status != ExecutionStatus::Failed {
                return;
            }
            state.epoch += 1;
            if *reset_unfinished {
                // Only finished work stays (late outcomes included); what never finished runs
                // again in the new epoch, and its old instances stay gone.
                state.reset_epoch = state.epoch;
                state
                    .steps
                    .retain(|_, s| matches!(s.status, StepStatus::Succeeded | StepStatus::Caught));
            } else {
                state.steps.retain(|_, s| s.status != StepStatus::Failed);
            }
            state.status = ExecutionStatus::Running;
            state.error = None;
            state.failed_step = None;
            state.ended_at = None;
        }
    }
}

/// The outcome of one attempt: applied only while that attempt is current and still pending
/// (inline steps have no instance yet and get one here).
fn end_attempt(
    state: &mut ExecutionState,
    key: &str,
    step: &str,
    epoch: u32,
    attempt: u32,
    at: DateTime<Utc>,
    apply: impl FnOnce(&mut StepState),
) {
    if !state.steps.contains_key(key) && epoch < state.reset_epoch {
        return; // a late outcome of an instance that a redrive dropped
    }
    let s = state
        .steps
        .entry(key.to_owned())
        .or_insert_with(|| instance(step, epoch, attempt, StepStatus::Running, at));
    if s.epoch == epoch && s.attempt == attempt && s.status.is_pending() {
        apply(s);
        s.ended_at = Some(at);
    }
}

/// A timer fired: waits end, retries become due, timeouts fail the attempt they guard.
fn fire(state: &mut ExecutionState, timer_id: &str, at: DateTime<Utc>) {
    let Some(timer) = state.timers.get_mut(timer_id) else {
        return;
    };
    if timer.fired {
        return;
    }
    timer.fired = true;
    let timer = timer.clone();
    let Some(s) = state.current(&timer.key, timer.epoch, timer.attempt) else {
        return;
    };
    let mut stray = false;
    match timer.purpose {
        TimerPurpose::Wait if s.status == StepStatus::Running => {
            s.status = StepStatus::Succeeded;
            s.output = Some(json!({"waited_until": timer.due_at}));
            s.ended_at = Some(at);
        }
        TimerPurpose::Retry if s.status == StepStatus::RetryPending => {
            s.status = StepStatus::RetryDue;
        }
        TimerPurpose::Timeout
            if matches!(s.status, StepStatus::Scheduled | StepStatus::Running) =>
        {
            // Its task may still be queued or in flight: a worker must not perform it late.
            stray = true;
            s.status = StepStatus::Failed;
            s.error = Some(StepError::new(
                "Timeout",
                "the step did not finish within its timeout",
                true,
            ));
            s.ended_at = Some(at);
        }
        TimerPurpose::ApprovalTimeout if s.status == StepStatus::AwaitingApproval => {
            s.status = StepStatus::Failed;
            s.error = Some(StepError::new(
                "ApprovalTimedOut",
                "no decision before the approval timeout",
                false,
            ));
            s.ended_at = Some(at);
        }
        _ => {}
    }
    if stray {
        state.stray_tasks += 1;
    }
}
