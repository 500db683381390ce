//! Execution events: everything that happens to an execution, as stored in its stream. The event
//! type is the enum tag; the rest is the payload.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::definition::Definition;

/// Which parent step waits for a child execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentRef {
    pub execution_id: String,
    pub key: String,
    pub epoch: u32,
    pub attempt: u32,
    /// How deep this child is: 1 for a child of a top-level execution.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// The top-level execution of this family (its descendants are counted against a cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Fields stay in name order: templates see this struct as it serializes (`{{ error | tojson }}`),
/// and rendered text must not change between releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// Stable kind the retry policy and catch match on (`Timeout`, `HttpError`, ...).
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

impl StepError {
    pub fn new(kind: &str, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind: kind.to_owned(),
            message: message.into(),
            retryable,
        }
    }
}

/// Tokens and money a step spent (LLM steps), and on which model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// `provider/model`, for usage reports by model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerPurpose {
    Wait,
    Retry,
    Timeout,
    ApprovalTimeout,
}

/// A step instance is addressed by its key: the step name, prefixed by the map iterations that
/// enclose it (`summarise[3]/fetch`). `epoch` counts redrives, `attempt` counts retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ExecutionEvent {
    ExecutionStarted {
        execution_id: String,
        workflow_id: String,
        workflow_version: u32,
        definition: Box<Definition>,
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRef>,
    },
    /// A composite, wait or task step began (maps record their items here).
    StepStarted {
        key: String,
        step: String,
        epoch: u32,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<Vec<Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child_execution_id: Option<String>,
    },
    /// A task for the step worker, with its request already rendered.
    StepScheduled {
        key: String,
        step: String,
        epoch: u32,
        attempt: u32,
        kind: String,
        request: Value,
    },
    StepSucceeded {
        key: String,
        step: String,
        epoch: u32,
        attempt: u32,
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        /// What the worker decided from this outcome, in the same event (one write instead of
        /// two, issue 14): applied right after it, as if appended next. Only plain successors
        /// (inline steps and new tasks) ride here; see `plan::worker_may_decide`. A release that
        /// does not know the field reads a plain outcome and decides the same itself. Upcasters
        /// are keyed by the outer event's type: one for a type that can ride here must walk
        /// `then` too.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        then: Vec<ExecutionEvent>,
        /// How many of `then` are tasks (`StepScheduled`): the worker's stream filter matches
        /// on it (a leaf attribute, where `then` is a list).
        #[serde(default, skip_serializing_if = "is_zero")]
        tasks: u32,
    },
    StepFailed {
        key: String,
        step: String,
        epoch: u32,
        attempt: u32,
        error: StepError,
        /// What a failed attempt still spent (an LLM answer that broke its schema).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    StepRetryScheduled {
        key: String,
        epoch: u32,
        attempt: u32,
        due_at: DateTime<Utc>,
        timer_id: String,
    },
    /// The step's error goes to a fallback step.
    StepCaught {
        key: String,
        epoch: u32,
        next: String,
    },
    TimerStarted {
        timer_id: String,
        key: String,
        epoch: u32,
        attempt: u32,
        purpose: TimerPurpose,
        due_at: DateTime<Utc>,
    },
    TimerFired {
        timer_id: String,
    },
    ApprovalRequested {
        key: String,
        step: String,
        epoch: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_at: Option<DateTime<Utc>>,
    },
    ApprovalGranted {
        key: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    ApprovalRejected {
        key: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    ExecutionSucceeded {
        output: Value,
    },
    ExecutionFailed {
        error: StepError,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    ExecutionCancelled {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A parallel step ended while instances in its other branches were unfinished (a
    /// `join: any` winner, or a failed branch): those instances are abandoned.
    StepsAbandoned {
        /// The parallel step's instance.
        key: String,
        epoch: u32,
        keys: Vec<String>,
    },
    /// Run again from the failed steps; everything that succeeded stays.
    ExecutionRedriven {
        by: String,
        /// Every unfinished instance runs again too (branches or items still in flight when the
        /// execution failed, whose results would now arrive too late). Redrives recorded before
        /// this field kept them, and replay the way they were recorded.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset_unfinished: bool,
    },
}

/// A task for the step worker: one attempt of a step instance, its request rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub key: String,
    pub step: String,
    pub epoch: u32,
    pub attempt: u32,
    pub kind: String,
    pub request: Value,
}

impl Task {
    /// The attempt's name within its execution (`<key>@<epoch>.<attempt>`).
    pub fn attempt_id(&self) -> String {
        format!("{}@{}.{}", self.key, self.epoch, self.attempt)
    }

    /// The outcome event; an output the planner could not pass on (too large for one event)
    /// fails the step here already, under the same rule as the planner's own outputs.
    pub fn outcome(&self, result: Result<Value, StepError>) -> ExecutionEvent {
        let result =
            result.and_then(|v| super::plan::fits(&v, "output", "OutputTooLarge").map(|_| v));
        ExecutionEvent::outcome(
            self.key.clone(),
            self.step.clone(),
            self.epoch,
            self.attempt,
            result,
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("event {event_type} cannot be read: {reason}")]
pub struct DecodeError {
    pub event_type: String,
    pub reason: String,
}

impl ExecutionEvent {
    /// The end of one attempt of a step instance: succeeded with an output, or failed.
    pub fn outcome(
        key: String,
        step: String,
        epoch: u32,
        attempt: u32,
        result: Result<Value, StepError>,
    ) -> Self {
        match result {
            Ok(output) => Self::StepSucceeded {
                key,
                step,
                epoch,
                attempt,
                output,
                usage: None,
                then: Vec::new(),
                tasks: 0,
            },
            Err(error) => Self::StepFailed {
                key,
                step,
                epoch,
                attempt,
                error,
                usage: None,
            },
        }
    }

    /// The outcome of an attempt that spent money (`usage`), whether it succeeded or not.
    pub fn outcome_with_usage(
        key: String,
        step: String,
        epoch: u32,
        attempt: u32,
        result: Result<Value, StepError>,
        spent: Usage,
    ) -> Self {
        match Self::outcome(key, step, epoch, attempt, result) {
            Self::StepSucceeded {
                key,
                step,
                epoch,
                attempt,
                output,
                ..
            } => Self::StepSucceeded {
                key,
                step,
                epoch,
                attempt,
                output,
                usage: Some(spent),
                then: Vec::new(),
                tasks: 0,
            },
            Self::StepFailed {
                key,
                step,
                epoch,
                attempt,
                error,
                ..
            } => Self::StepFailed {
                key,
                step,
                epoch,
                attempt,
                error,
                usage: Some(spent),
            },
            other => other,
        }
    }

    /// The stored form: event type and payload map.
    pub fn into_parts(self) -> (String, Map<String, Value>) {
        let Ok(Value::Object(mut map)) = serde_json::to_value(self) else {
            unreachable!("execution events serialize to objects")
        };
        let event_type = match map.remove("type") {
            Some(Value::String(t)) => t,
            _ => unreachable!("execution events are tagged"),
        };
        (event_type, map)
    }

    pub fn event_type(&self) -> &'static str {
        match self {
            Self::ExecutionStarted { .. } => "ExecutionStarted",
            Self::StepStarted { .. } => "StepStarted",
            Self::StepScheduled { .. } => "StepScheduled",
            Self::StepSucceeded { .. } => "StepSucceeded",
            Self::StepFailed { .. } => "StepFailed",
            Self::StepRetryScheduled { .. } => "StepRetryScheduled",
            Self::StepCaught { .. } => "StepCaught",
            Self::TimerStarted { .. } => "TimerStarted",
            Self::TimerFired { .. } => "TimerFired",
            Self::ApprovalRequested { .. } => "ApprovalRequested",
            Self::ApprovalGranted { .. } => "ApprovalGranted",
            Self::ApprovalRejected { .. } => "ApprovalRejected",
            Self::ExecutionSucceeded { .. } => "ExecutionSucceeded",
            Self::ExecutionFailed { .. } => "ExecutionFailed",
            Self::ExecutionCancelled { .. } => "ExecutionCancelled",
            Self::ExecutionRedriven { .. } => "ExecutionRedriven",
            Self::StepsAbandoned { .. } => "StepsAbandoned",
        }
    }

    pub fn from_parts(event_type: &str, payload: &Map<String, Value>) -> Result<Self, DecodeError> {
        let mut map = payload.clone();
        map.insert("type".into(), Value::String(event_type.to_owned()));
        serde_json::from_value(Value::Object(map)).map_err(|e| DecodeError {
            event_type: event_type.to_owned(),
            reason: e.to_string(),
        })
    }

    /// This event and, for an outcome carrying the worker's decisions, each of them in order:
    /// what the history shows and what consumers look through.
    pub fn parts(&self) -> impl Iterator<Item = &ExecutionEvent> {
        let then: &[ExecutionEvent] = match self {
            Self::StepSucceeded { then, .. } => then,
            _ => &[],
        };
        std::iter::once(self).chain(then.iter())
    }

    /// The tasks this event schedules: itself if it is one, or those an outcome carries.
    pub fn tasks(&self) -> impl Iterator<Item = Task> + '_ {
        self.parts().filter_map(|e| match e {
            Self::StepScheduled {
                key,
                step,
                epoch,
                attempt,
                kind,
                request,
            } => Some(Task {
                key: key.clone(),
                step: step.clone(),
                epoch: *epoch,
                attempt: *attempt,
                kind: kind.clone(),
                request: request.clone(),
            }),
            _ => None,
        })
    }

    /// The outcome with the worker's decisions attached (`then`), or `None` for an event that
    /// cannot carry them.
    pub fn with_decisions(mut self, decided: Vec<ExecutionEvent>) -> Option<Self> {
        let Self::StepSucceeded { then, tasks, .. } = &mut self else {
            return None;
        };
        if !then.is_empty() {
            return None;
        }
        *tasks = decided
            .iter()
            .filter(|e| matches!(e, Self::StepScheduled { .. }))
            .count() as u32;
        *then = decided;
        Some(self)
    }

    /// The event as it stands alone: an outcome without the decisions it carries.
    pub fn alone(&self) -> Self {
        let mut alone = self.clone();
        if let Self::StepSucceeded { then, tasks, .. } = &mut alone {
            then.clear();
            *tasks = 0;
        }
        alone
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::ExecutionSucceeded { .. }
                | Self::ExecutionFailed { .. }
                | Self::ExecutionCancelled { .. }
        )
    }
}
