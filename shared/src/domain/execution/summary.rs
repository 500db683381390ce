//! The execution summary read model: a pure function of the state, so a rebuild from events is
//! the live projection by construction (and tested to be).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::StepError;
use super::state::{ExecutionState, StepStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    pub key: String,
    pub step: String,
    pub status: StepStatus,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub execution_id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    pub status: String,
    pub current_steps: Vec<String>,
    /// Steps waiting for a human decision (their keys).
    pub awaiting_approval: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub steps_completed: usize,
    /// The last event applied: a projection never goes backwards.
    pub version: u64,
    /// Redrives so far: a worker holding a task of an earlier epoch of an ended execution drops it.
    #[serde(default)]
    pub epoch: u32,
    /// Attempts given up while a worker may hold their task: workers check the state first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stray_tasks: u32,
    /// Every step instance (the execution view); listings leave it out, see [`Summary::listing`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSummary>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Summary {
    /// The summary as listings keep it: without the per-step detail, which grows with every step
    /// instance (a map of 1,000 items) while a listing needs only status, timings and totals.
    pub fn listing(mut self) -> Self {
        self.steps.clear();
        self
    }

    /// What a stored summary must keep current: everything but progress (current steps, steps
    /// completed, version) and the per-step detail. Progress changes on every step; a listing
    /// reads it from the execution itself while the execution runs, so the summary is rewritten
    /// only when this part changes (issue 14). The worker's check (status, epoch, stray tasks)
    /// and the sweep's index key (status) are in it.
    pub fn without_progress(&self) -> Self {
        Self {
            current_steps: Vec::new(),
            steps_completed: 0,
            version: 0,
            steps: Vec::new(),
            ..self.clone()
        }
    }

    pub fn of(state: &ExecutionState) -> Self {
        let steps: Vec<StepSummary> = state
            .steps
            .iter()
            .map(|(key, s)| StepSummary {
                key: key.clone(),
                step: s.step.clone(),
                status: s.status,
                attempt: s.attempt,
                started_at: s.started_at,
                ended_at: s.ended_at,
                error: s.error.clone(),
            })
            .collect();
        Self {
            execution_id: state.id.clone(),
            workflow_id: state.workflow_id.clone(),
            workflow_version: state.workflow_version,
            epoch: state.epoch,
            stray_tasks: state.stray_tasks,
            status: state.status.as_str().to_owned(),
            current_steps: state.pending_steps(),
            awaiting_approval: state
                .steps
                .iter()
                .filter(|(_, s)| s.status == StepStatus::AwaitingApproval)
                .map(|(k, _)| k.clone())
                .collect(),
            started_at: state.started_at,
            ended_at: state.ended_at,
            duration_ms: match (state.started_at, state.ended_at) {
                (Some(s), Some(e)) => Some((e - s).num_milliseconds()),
                _ => None,
            },
            output: state.output.clone(),
            error: state.error.clone(),
            failed_step: state.failed_step.clone(),
            parent_execution_id: state.parent.as_ref().map(|p| p.execution_id.clone()),
            input_tokens: state.usage.input_tokens,
            output_tokens: state.usage.output_tokens,
            cost_usd: state.usage.cost_usd,
            steps_completed: state
                .steps
                .values()
                .filter(|s| s.status == StepStatus::Succeeded)
                .count(),
            version: state.version,
            steps,
        }
    }
}
