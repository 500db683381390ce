//! A simulated execution for tests and benchmarks: the pure engine driven by a scripted worker
//! and a manual clock, no store. (Feature `testkit`.)

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::Value;

use super::{decide, evolve, ExecutionEvent as E, ExecutionState, StepError, StepStatus};
use crate::domain::{validate, Definition};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// An open task: (key, step, epoch, attempt, request).
pub type Task = (String, String, u32, u32, Value);

pub struct Simulation {
    pub state: ExecutionState,
    pub history: Vec<E>,
    pub now: DateTime<Utc>,
}

impl Simulation {
    /// Starts an execution of `def` (which must be valid) and runs the first turn.
    pub fn start(def: Value, input: Value) -> Self {
        let def = Definition::from_value(def).expect("the definition parses");
        assert_eq!(validate(&def), vec![], "the definition is valid");
        let mut sim = Simulation {
            state: ExecutionState::default(),
            history: Vec::new(),
            now: t0(),
        };
        sim.apply(vec![E::ExecutionStarted {
            execution_id: "e1".into(),
            workflow_id: "wf".into(),
            workflow_version: 1,
            definition: Box::new(def),
            input,
            parent: None,
        }]);
        sim.turn();
        sim
    }

    pub fn apply(&mut self, events: Vec<E>) {
        for e in events {
            let v = self.state.version + 1;
            evolve(&mut self.state, v, self.now, &e);
            self.history.push(e);
        }
    }

    /// One orchestrator turn.
    pub fn turn(&mut self) {
        let (_, events) = decide(&self.state, self.now);
        self.apply(events);
    }

    /// Scheduled tasks not yet answered.
    pub fn tasks(&self) -> Vec<Task> {
        self.history
            .iter()
            .flat_map(E::tasks)
            .filter(|t| {
                self.state.steps.get(&t.key).is_some_and(|s| {
                    s.attempt == t.attempt
                        && s.epoch == t.epoch
                        && s.status == StepStatus::Scheduled
                })
            })
            .map(|t| (t.key, t.step, t.epoch, t.attempt, t.request))
            .collect()
    }

    /// Answers every open task with `f` as the worker would (llm and subworkflow steps: started,
    /// then the outcome; http and mcp steps are claimed outside the history, so only the
    /// outcome), then runs a turn. Returns how many tasks were answered.
    pub fn work(&mut self, f: impl Fn(&str, &Value, u32) -> Result<Value, StepError>) -> usize {
        let tasks = self.tasks();
        for (key, step, epoch, attempt, request) in &tasks {
            let kind = self
                .state
                .definition
                .as_ref()
                .and_then(|d| d.steps.get(step))
                .map(|s| s.kind.name());
            let mut events = Vec::with_capacity(2);
            if matches!(kind, Some("llm" | "subworkflow")) {
                events.push(E::StepStarted {
                    key: key.clone(),
                    step: step.clone(),
                    epoch: *epoch,
                    attempt: *attempt,
                    items: None,
                    child_execution_id: None,
                });
            }
            events.push(E::outcome(
                key.clone(),
                step.clone(),
                *epoch,
                *attempt,
                f(step, request, *attempt),
            ));
            self.apply(events);
        }
        self.turn();
        tasks.len()
    }

    /// Advances the clock and fires due timers, as the timer function does.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let due: Vec<String> = self
            .state
            .timers
            .iter()
            .filter(|(_, t)| !t.fired && t.due_at <= self.now)
            .map(|(id, _)| id.clone())
            .collect();
        for timer_id in due {
            self.apply(vec![E::TimerFired { timer_id }]);
        }
        self.turn();
    }

    pub fn status(&self) -> &'static str {
        self.state.status.as_str()
    }

    pub fn types(&self) -> Vec<&'static str> {
        self.history.iter().map(E::event_type).collect()
    }
}
