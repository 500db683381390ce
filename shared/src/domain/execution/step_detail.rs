//! What a step instance took and spent, folded from an execution's events: the request of its
//! latest attempt and the tokens and money of all its attempts. The execution state keeps
//! neither (they would grow every snapshot); the execution view folds them on demand.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ExecutionEvent, Usage};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepDetail {
    /// The request the worker was given (the step's rendered input), latest attempt.
    pub input: Option<Value>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

impl StepDetail {
    fn spend(&mut self, usage: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(usage.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(usage.output_tokens);
        self.cost_usd += usage.cost_usd;
    }
}

/// Every step instance's detail, by key.
pub fn step_details<'a>(
    events: impl IntoIterator<Item = &'a ExecutionEvent>,
) -> BTreeMap<String, StepDetail> {
    let mut details = BTreeMap::new();
    fold_step_details(&mut details, events);
    details
}

/// Adds `events` (the next part of a history) to `details`.
pub fn fold_step_details<'a>(
    details: &mut BTreeMap<String, StepDetail>,
    events: impl IntoIterator<Item = &'a ExecutionEvent>,
) {
    for event in events.into_iter().flat_map(ExecutionEvent::parts) {
        match event {
            ExecutionEvent::StepScheduled { key, request, .. } => {
                details.entry(key.clone()).or_default().input = Some(request.clone());
            }
            ExecutionEvent::StepSucceeded {
                key,
                usage: Some(usage),
                ..
            }
            | ExecutionEvent::StepFailed {
                key,
                usage: Some(usage),
                ..
            } => details.entry(key.clone()).or_default().spend(usage),
            _ => {}
        }
    }
}
