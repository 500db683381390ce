//! `plan`: given the state, what happens next. Pure: the time is an argument, jitter is derived
//! from the timer id, and maps iterate in index order, so the same state always plans the same.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::events::{ExecutionEvent as E, StepError, TimerPurpose};
use super::state::{evolve, ExecutionState, ExecutionStatus, StepState, StepStatus};
use crate::domain::definition::{Definition, Join, RetryPolicy, Step, StepKind};
use crate::domain::validate::MAX_DURATION_SECS;
use crate::domain::{expr, secret_ref};

/// Most items one map step may iterate over (each iteration's steps live in the state).
pub const MAX_MAP_ITEMS: usize = 1000;
/// The most one step's output or request may take as a DynamoDB attribute: each is recorded in
/// one event, and an event is one item (400 KB with its envelope).
pub const MAX_VALUE_BYTES: usize = 350 * 1024;

/// A JSON value's size as a DynamoDB attribute, by AWS's rules: strings by their UTF-8 bytes,
/// numbers about one byte per two digits plus one, lists and maps 3 bytes plus one per element
/// (and the names of a map's keys).
pub fn dynamo_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 1,
        Value::String(s) => s.len(),
        Value::Number(n) => {
            let digits = n.to_string().chars().filter(char::is_ascii_digit).count();
            digits.div_ceil(2) + 1
        }
        Value::Array(items) => 3 + items.iter().map(|v| 1 + dynamo_size(v)).sum::<usize>(),
        Value::Object(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + dynamo_size(v))
                .sum::<usize>()
        }
    }
}

/// How deep a recorded value may nest: DynamoDB allows 32 levels in an item, and events and
/// snapshots put values a few levels down.
pub const MAX_VALUE_DEPTH: usize = 24;

/// Whether DynamoDB can store `value` as it is: numbers within its range (magnitudes from
/// 1e-130 to below 1e126), nesting at most [`MAX_VALUE_DEPTH`], no empty object keys. `Err`
/// says what is wrong and where (a JSON pointer).
pub fn storable(value: &Value) -> Result<(), String> {
    fn walk(value: &Value, at: &mut String, depth: usize) -> Result<(), String> {
        let at_or_root = |at: &str| {
            if at.is_empty() {
                "/".to_owned()
            } else {
                at.to_owned()
            }
        };
        match value {
            Value::Number(n) => {
                let ok = n.is_i64()
                    || n.is_u64()
                    || n.as_f64().is_some_and(|f| {
                        let a = f.abs();
                        a == 0.0 || (1e-130..1e126).contains(&a)
                    });
                if !ok {
                    return Err(format!(
                        "{}: the number {n} is outside the range a stored number may have (1e-130 to 1e126)",
                        at_or_root(at)
                    ));
                }
                Ok(())
            }
            Value::Array(_) | Value::Object(_) if depth >= MAX_VALUE_DEPTH => Err(format!(
                "{}: values may nest at most {MAX_VALUE_DEPTH} levels deep",
                at_or_root(at)
            )),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("/{i}"));
                    walk(v, at, depth + 1)?;
                    at.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, v) in map {
                    if k.is_empty() {
                        return Err(format!(
                            "{}: an object key is empty, which cannot be stored",
                            at_or_root(at)
                        ));
                    }
                    let len = at.len();
                    at.push('/');
                    at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(v, at, depth + 1)?;
                    at.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, &mut String::new(), 0)
}

/// `Err(kind)` naming the limit when `value` is too large to record in one event, or
/// `UnstorableValue` when DynamoDB could not store it at all.
pub fn fits(value: &Value, what: &str, kind: &str) -> Result<(), StepError> {
    if let Err(why) = storable(value) {
        return Err(StepError::new(
            "UnstorableValue",
            format!("the {what} cannot be recorded: {why}"),
            false,
        ));
    }
    let bytes = dynamo_size(value);
    if bytes <= MAX_VALUE_BYTES {
        return Ok(());
    }
    Err(StepError::new(
        kind,
        format!(
            "the {what} takes {bytes} bytes in DynamoDB, more than the {} KB one event holds",
            MAX_VALUE_BYTES / 1024
        ),
        false,
    ))
}

/// How a graph (the workflow, a branch, an iteration) stands.
enum Walk {
    Done(Value),
    Failed(StepError, String),
    Pending,
}

/// What a step's templates may read besides `input`, `steps` and `execution`.
#[derive(Clone, Default)]
struct Scope {
    /// Key prefix of the enclosing map iterations, e.g. `each[3]/`.
    prefix: String,
    /// Every enclosing prefix, innermost first, ending with "".
    prefixes: Vec<String>,
    item: Option<(Value, usize)>,
}

struct Planner<'a> {
    state: &'a ExecutionState,
    def: &'a Definition,
    now: DateTime<Utc>,
    out: Vec<E>,
}

/// The next events for this state (empty when it is waiting or finished).
pub fn plan(state: &ExecutionState, now: DateTime<Utc>) -> Vec<E> {
    let Some(def) = state.definition() else {
        return Vec::new();
    };
    if state.status != ExecutionStatus::Running {
        return Vec::new();
    }
    let mut p = Planner {
        state,
        def,
        now,
        out: Vec::new(),
    };
    let top = Scope {
        prefixes: vec![String::new()],
        ..Scope::default()
    };
    match p.walk(&def.start, &top, None) {
        Walk::Done(last) => {
            let event = match &def.outputs {
                None => E::ExecutionSucceeded { output: last },
                Some(outputs) => match expr::render_value(outputs, &p.context(&top, None)) {
                    Err(e) => E::ExecutionFailed {
                        error: StepError::new("OutputError", format!("outputs: {e}"), false),
                        step: None,
                    },
                    // Outputs gathered from several steps can outgrow the event that records
                    // them (and a parent's step that takes them over).
                    Ok(output) => match fits(&output, "execution's output", "OutputTooLarge") {
                        Ok(()) => E::ExecutionSucceeded { output },
                        Err(error) => E::ExecutionFailed { error, step: None },
                    },
                },
            };
            p.out.push(event);
        }
        Walk::Failed(error, step) => p.out.push(E::ExecutionFailed {
            error,
            step: Some(step),
        }),
        Walk::Pending => {}
    }
    p.out
}

/// Plans and applies until nothing more can happen now: the events one orchestrator turn appends.
/// Inline steps (template, transform, condition) resolve within the same turn.
pub fn decide(state: &ExecutionState, now: DateTime<Utc>) -> (ExecutionState, Vec<E>) {
    let mut next = state.clone();
    let mut all = Vec::new();
    // Each round resolves at least one step; the bound only guards against a planning bug.
    for _ in 0..10_000 {
        let events = plan(&next, now);
        if events.is_empty() {
            break;
        }
        for e in &events {
            let version = next.version;
            evolve(&mut next, version, now, e);
        }
        all.extend(events);
    }
    (next, all)
}

/// The most tasks one outcome may carry: a wide fan-out (a parallel step, a map starting) is
/// scheduled by the orchestrator instead, so one record never holds more work than a worker
/// invocation handles at once.
pub const MAX_CARRIED_TASKS: usize = 4;

/// Whether the worker that recorded an outcome may append `decided` (what `decide` gave on the
/// state after it, `after`) inside the outcome's own event, instead of leaving the turn to the
/// orchestrator: only when they are plain successors, new tasks and inline steps, with at least
/// one task, and the execution goes on. Anything with a clock, a person, money, a child or an
/// ending in it (timers, approvals, usage, abandoned branches, the execution's end) stays the
/// orchestrator's, since its turn does more than append (timer rows, ledgers, read models,
/// children).
pub fn worker_may_decide(after: &ExecutionState, decided: &[E]) -> bool {
    let tasks = decided
        .iter()
        .filter(|e| matches!(e, E::StepScheduled { .. }))
        .count();
    after.status == ExecutionStatus::Running
        && (1..=MAX_CARRIED_TASKS).contains(&tasks)
        && decided.iter().all(|e| match e {
            E::StepScheduled { .. } => true,
            E::StepStarted {
                child_execution_id, ..
            } => child_execution_id.is_none(),
            E::StepSucceeded { usage, then, .. } => usage.is_none() && then.is_empty(),
            _ => false,
        })
}

impl Planner<'_> {
    fn step(&self, id: &str) -> &Step {
        &self.def.steps[id]
    }

    fn walk(&mut self, start: &str, scope: &Scope, mut error: Option<StepError>) -> Walk {
        let mut current = start.to_owned();
        // A graph is acyclic (validated), so a walk visits each step at most once.
        for _ in 0..=self.def.steps.len() {
            let key = format!("{}{current}", scope.prefix);
            let Some(inst) = self.state.steps.get(&key) else {
                self.enter(&current, &key, scope, error.take());
                return Walk::Pending;
            };
            let step = self.step(&current);
            match inst.status {
                StepStatus::Succeeded => {
                    let output = inst.output.clone().unwrap_or(Value::Null);
                    let next = match &step.kind {
                        StepKind::Condition { .. } => output
                            .get("next")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        StepKind::Succeed { .. } => None,
                        _ => step.next.clone(),
                    };
                    error = None;
                    match next {
                        Some(n) => current = n,
                        None => return Walk::Done(output),
                    }
                }
                StepStatus::Caught => {
                    error = inst.error.clone();
                    match inst.caught_next.clone() {
                        Some(n) => current = n,
                        None => return Walk::Pending,
                    }
                }
                StepStatus::Failed => return self.failed(&current, &key, inst, scope),
                StepStatus::RetryDue => {
                    self.schedule(&current, &key, scope, inst.attempt + 1, None);
                    return Walk::Pending;
                }
                StepStatus::Running => {
                    return match &step.kind {
                        StepKind::Parallel { branches, join } => {
                            let starts: Vec<String> =
                                branches.iter().map(|b| b.start.clone()).collect();
                            self.parallel(&current, &key, inst, &starts, *join, scope)
                        }
                        StepKind::Map {
                            concurrency,
                            iterator,
                            ..
                        } => {
                            let start = iterator.start.clone();
                            self.map(&current, &key, inst, &start, *concurrency as usize, scope)
                        }
                        _ => Walk::Pending,
                    }
                }
                StepStatus::Scheduled
                | StepStatus::AwaitingApproval
                | StepStatus::RetryPending
                | StepStatus::Abandoned => return Walk::Pending,
            }
        }
        Walk::Pending
    }

    /// Retry, catch, or hand the failure to the enclosing graph.
    fn failed(&mut self, id: &str, key: &str, inst: &StepState, scope: &Scope) -> Walk {
        let step = self.step(id);
        let error = inst
            .error
            .clone()
            .unwrap_or_else(|| StepError::new("Unknown", "failed without an error", false));
        if let Some(policy) = &step.retry {
            if error.retryable
                && inst.attempt < policy.max_attempts
                && matches_kind(&policy.errors, &error.kind)
            {
                let timer_id = timer_id(key, inst.epoch, inst.attempt + 1, TimerPurpose::Retry);
                let due_at = self.now + backoff(policy, inst.attempt, &timer_id);
                self.out.push(E::StepRetryScheduled {
                    key: key.to_owned(),
                    epoch: inst.epoch,
                    attempt: inst.attempt + 1,
                    due_at,
                    timer_id: timer_id.clone(),
                });
                self.out.push(E::TimerStarted {
                    timer_id,
                    key: key.to_owned(),
                    epoch: inst.epoch,
                    attempt: inst.attempt,
                    purpose: TimerPurpose::Retry,
                    due_at,
                });
                return Walk::Pending;
            }
        }
        if let Some(c) = step
            .catch
            .iter()
            .find(|c| matches_kind(&c.errors, &error.kind))
        {
            self.out.push(E::StepCaught {
                key: key.to_owned(),
                epoch: inst.epoch,
                next: c.next.clone(),
            });
            return Walk::Pending;
        }
        let _ = scope;
        Walk::Failed(error, key.to_owned())
    }

    fn parallel(
        &mut self,
        id: &str,
        key: &str,
        inst: &StepState,
        starts: &[String],
        join: Join,
        scope: &Scope,
    ) -> Walk {
        let results: Vec<Walk> = starts.iter().map(|s| self.walk(s, scope, None)).collect();
        let done = |w: &Walk| matches!(w, Walk::Done(_));
        let first_error = results.iter().find_map(|w| match w {
            Walk::Failed(e, _) => Some(e.clone()),
            _ => None,
        });
        let finished = match join {
            Join::All => match first_error {
                Some(e) => Some(Err(e)),
                None if results.iter().all(done) => Some(Ok(Value::Array(
                    results
                        .into_iter()
                        .map(|w| match w {
                            Walk::Done(v) => v,
                            _ => Value::Null,
                        })
                        .collect(),
                ))),
                None => None,
            },
            Join::Any => {
                let all_failed = results.iter().all(|w| matches!(w, Walk::Failed(..)));
                match results.into_iter().enumerate().find_map(|(i, w)| match w {
                    Walk::Done(v) => Some((i, v)),
                    _ => None,
                }) {
                    Some((i, v)) => Some(Ok(json!({"branch": i, "output": v}))),
                    None if all_failed => first_error.map(Err),
                    None => None,
                }
            }
        };
        if let Some(result) = finished {
            let result =
                result.and_then(|v| fits(&v, "combined output", "OutputTooLarge").map(|_| v));
            // A `join: any` winner ends the race: what is still unfinished in the other branches
            // is abandoned (nothing more scheduled, timers inert, late results ignored). A failed
            // parallel keeps its in-flight branches: their late results stay usable by a redrive.
            let abandoned = if result.is_ok() {
                self.unfinished_under(starts, scope)
            } else {
                Vec::new()
            };
            if !abandoned.is_empty() {
                self.out.push(E::StepsAbandoned {
                    key: key.to_owned(),
                    epoch: inst.epoch,
                    keys: abandoned,
                });
            }
            self.finish(id, key, inst, result);
        }
        Walk::Pending
    }

    /// Pending instances of the steps reachable from `starts` in `scope` (map iterations
    /// included, by their key prefix).
    fn unfinished_under(&self, starts: &[String], scope: &Scope) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<String> = starts.to_vec();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(step) = self.def.steps.get(&id) else {
                continue;
            };
            stack.extend(step.next.iter().cloned());
            stack.extend(step.catch.iter().map(|c| c.next.clone()));
            match &step.kind {
                StepKind::Condition { branches, default } => {
                    stack.extend(branches.iter().map(|b| b.next.clone()));
                    stack.push(default.clone());
                }
                StepKind::Parallel { branches, .. } => {
                    stack.extend(branches.iter().map(|b| b.start.clone()))
                }
                StepKind::Map { iterator, .. } => stack.push(iterator.start.clone()),
                _ => {}
            }
        }
        self.state
            .steps
            .iter()
            .filter(|(_, s)| s.status.is_pending() && s.epoch == self.state.epoch)
            .filter(|(k, _)| {
                k.strip_prefix(scope.prefix.as_str()).is_some_and(|rest| {
                    seen.iter().any(|id| {
                        rest == id
                            || rest
                                .strip_prefix(id.as_str())
                                .is_some_and(|r| r.starts_with('['))
                    })
                })
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn map(
        &mut self,
        id: &str,
        key: &str,
        inst: &StepState,
        start: &str,
        concurrency: usize,
        scope: &Scope,
    ) -> Walk {
        let items = inst.items.clone().unwrap_or_default();
        let mut results = Vec::with_capacity(items.len());
        let mut in_progress = 0;
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("{}{id}[{i}]/", scope.prefix);
            let started = self.state.steps.contains_key(&format!("{prefix}{start}"));
            if !started && in_progress >= concurrency {
                // Iterations start in index order, so none after this one has started either.
                break;
            }
            let mut prefixes = vec![prefix.clone()];
            prefixes.extend(scope.prefixes.iter().cloned());
            let inner = Scope {
                prefix,
                prefixes,
                item: Some((item.clone(), i)),
            };
            match self.walk(start, &inner, None) {
                Walk::Done(v) => results.push(v),
                Walk::Failed(e, at) => {
                    let e =
                        StepError::new(&e.kind, format!("item {i} ({at}): {}", e.message), false);
                    self.finish(id, key, inst, Err(e));
                    return Walk::Pending;
                }
                Walk::Pending => in_progress += 1,
            }
        }
        if results.len() == items.len() {
            self.finish(id, key, inst, Ok(Value::Array(results)));
        }
        Walk::Pending
    }

    /// Ends a map or parallel. Its combined output may be too large for its event: then it
    /// fails (catchable) instead of the execution.
    fn finish(&mut self, id: &str, key: &str, inst: &StepState, result: Result<Value, StepError>) {
        let result = result.and_then(|v| fits(&v, "combined output", "OutputTooLarge").map(|_| v));
        self.out.push(E::outcome(
            key.to_owned(),
            id.to_owned(),
            inst.epoch,
            inst.attempt,
            result,
        ));
    }

    /// The first events of a step instance.
    fn enter(&mut self, id: &str, key: &str, scope: &Scope, error: Option<StepError>) {
        let step = self.step(id).clone();
        let ctx = self.context(scope, error.as_ref());
        let epoch = self.state.epoch;
        let done = |r: Result<Value, StepError>| {
            let r = r.and_then(|v| fits(&v, "output", "OutputTooLarge").map(|_| v));
            E::outcome(key.to_owned(), id.to_owned(), epoch, 1, r)
        };
        let started = |items: Option<Vec<Value>>| E::StepStarted {
            key: key.to_owned(),
            step: id.to_owned(),
            epoch,
            attempt: 1,
            items,
            child_execution_id: None,
        };
        match &step.kind {
            StepKind::Template { template } => {
                let r = expr::render_value(template, &ctx).map_err(|e| template_error(&e));
                self.out.push(done(r));
            }
            StepKind::Transform { mapping } => {
                let r = expr::transform(mapping, &ctx).map_err(|e| expression_error(&e));
                self.out.push(done(r));
            }
            StepKind::Condition { branches, default } => {
                let mut chosen = Ok(default.clone());
                for b in branches {
                    match expr::truthy(&b.when, &ctx) {
                        Ok(true) => {
                            chosen = Ok(b.next.clone());
                            break;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            chosen = Err(expression_error(&e));
                            break;
                        }
                    }
                }
                self.out
                    .push(done(chosen.map(|next| json!({"next": next}))));
            }
            StepKind::Parallel { .. } => self.out.push(started(None)),
            StepKind::Map { items, .. } => match expr::eval(items, &ctx) {
                Ok(Value::Array(items)) if items.len() <= MAX_MAP_ITEMS => {
                    let list = Value::Array(items);
                    if let Err(e) = fits(&list, "list of items", "MapTooLarge") {
                        return self.out.push(done(Err(e)));
                    }
                    let Value::Array(items) = list else { return };
                    self.out.push(started(Some(items)))
                }
                Ok(Value::Array(items)) => self.out.push(done(Err(StepError::new(
                    "MapTooLarge",
                    format!("{} items; a map takes at most {MAX_MAP_ITEMS}", items.len()),
                    false,
                )))),
                Ok(other) => self.out.push(done(Err(StepError::new(
                    "ExpressionError",
                    format!("`{items}` is {}, not a list", kind_of(&other)),
                    false,
                )))),
                Err(e) => self.out.push(done(Err(expression_error(&e)))),
            },
            StepKind::Wait { seconds, until } => {
                let due = match (seconds, until) {
                    (Some(s), _) => later(self.now, *s),
                    (None, Some(t)) => expr::render(t, &ctx)
                        .map_err(|e| template_error(&e))
                        .and_then(|s| {
                            DateTime::parse_from_rfc3339(s.trim())
                                .map(|d| d.with_timezone(&Utc))
                                .map_err(|e| {
                                    StepError::new(
                                        "TemplateError",
                                        format!(
                                            "`until` rendered {s:?}, not an RFC 3339 time: {e}"
                                        ),
                                        false,
                                    )
                                })
                        })
                        .and_then(|due| within_reach(self.now, due)),
                    (None, None) => Err(StepError::new(
                        "InvalidStep",
                        "wait without a duration",
                        false,
                    )),
                };
                match due {
                    Ok(due_at) => {
                        self.out.push(started(None));
                        self.timer(key, epoch, 1, TimerPurpose::Wait, due_at);
                    }
                    Err(e) => self.out.push(done(Err(e))),
                }
            }
            StepKind::Approval { prompt } => {
                let prompt = match prompt.as_deref().map(|p| expr::render(p, &ctx)).transpose() {
                    Ok(p) => p,
                    Err(e) => return self.out.push(done(Err(template_error(&e)))),
                };
                let timeout_at = match step.timeout_seconds.map(|s| later(self.now, s)).transpose()
                {
                    Ok(t) => t,
                    Err(e) => return self.out.push(done(Err(e))),
                };
                self.out.push(E::ApprovalRequested {
                    key: key.to_owned(),
                    step: id.to_owned(),
                    epoch,
                    prompt,
                    timeout_at,
                });
                if let Some(due_at) = timeout_at {
                    self.timer(key, epoch, 1, TimerPurpose::ApprovalTimeout, due_at);
                }
            }
            StepKind::Succeed { output } => {
                let r = match output {
                    Some(o) => expr::render_value(o, &ctx).map_err(|e| template_error(&e)),
                    None => Ok(Value::Null),
                };
                self.out.push(done(r));
            }
            StepKind::Fail { error, cause } => self.out.push(done(Err(StepError::new(
                error,
                cause
                    .clone()
                    .unwrap_or_else(|| format!("step {id} failed the execution")),
                false,
            )))),
            StepKind::Http { .. }
            | StepKind::Subworkflow { .. }
            | StepKind::Llm(_)
            | StepKind::Mcp { .. } => self.schedule(id, key, scope, 1, Some(ctx)),
        }
    }

    fn timer(
        &mut self,
        key: &str,
        epoch: u32,
        attempt: u32,
        purpose: TimerPurpose,
        due_at: DateTime<Utc>,
    ) {
        self.out.push(E::TimerStarted {
            timer_id: timer_id(key, epoch, attempt, purpose),
            key: key.to_owned(),
            epoch,
            attempt,
            purpose,
            due_at,
        });
    }

    /// A task attempt for the step worker, with its request rendered now.
    fn schedule(
        &mut self,
        id: &str,
        key: &str,
        scope: &Scope,
        attempt: u32,
        ctx: Option<expr::Context>,
    ) {
        let step = self.step(id).clone();
        let ctx = ctx.unwrap_or_else(|| self.context(scope, None));
        let epoch = self.state.epoch;
        match render_request(&step.kind, &ctx)
            .and_then(|r| fits(&r, "rendered request", "RequestTooLarge").map(|_| r))
        {
            Ok(mut request) => {
                if matches!(step.kind, StepKind::Subworkflow { .. }) {
                    // The child's place in the family: subworkflows nest only so deep, and a
                    // family has only so many members.
                    let parent = self.state.parent.as_ref();
                    request["depth"] = json!(parent.map_or(0, |p| p.depth.max(1)) + 1);
                    request["root"] = json!(parent
                        .and_then(|p| p.root.clone())
                        .or_else(|| parent.map(|p| p.execution_id.clone()))
                        .unwrap_or_else(|| self.state.id.clone()));
                }
                if matches!(step.kind, StepKind::Llm(_)) {
                    // The budgets this call is checked against, besides the tenant's.
                    let max = self.def.budget.as_ref();
                    request["budget"] = json!({
                        "workflow_id": self.state.workflow_id,
                        "execution_id": self.state.id,
                        "max_usd": max.and_then(|b| b.max_usd),
                        "max_tokens": max.and_then(|b| b.max_tokens),
                    });
                }
                self.out.push(E::StepScheduled {
                    key: key.to_owned(),
                    step: id.to_owned(),
                    epoch,
                    attempt,
                    kind: step.kind.name().to_owned(),
                    request,
                });
                // Validation bounds the timeout; a definition stored before the bound existed gets the
                // longest one instead of overflowing the clock.
                if let Some(s) = step.timeout_seconds {
                    let due = later(self.now, s.min(MAX_DURATION_SECS))
                        .unwrap_or(self.now + Duration::days(366));
                    self.timer(key, epoch, attempt, TimerPurpose::Timeout, due);
                }
            }
            Err(error) => self.out.push(E::outcome(
                key.to_owned(),
                id.to_owned(),
                epoch,
                attempt,
                Err(error),
            )),
        }
    }

    /// The template context: `input`, `steps` (the innermost instance of each step), `execution`,
    /// and inside maps `item` and `index`; `error` in a catch's fallback. Built from borrowed
    /// parts straight into the template engine's values (no copy of every output as JSON first).
    fn context(&self, scope: &Scope, error: Option<&StepError>) -> expr::Context {
        // Fields in name order, as the JSON maps this replaced kept them: a template printing a
        // whole entry (`{{ steps.a | tojson }}`) renders the same text as before.
        #[derive(Serialize)]
        struct StepView<'a> {
            error: &'a Option<StepError>,
            output: &'a Option<Value>,
            status: StepStatus,
        }
        #[derive(Serialize)]
        struct ExecutionView<'a> {
            id: &'a str,
            workflow_id: &'a str,
            workflow_version: u32,
        }
        #[derive(Serialize)]
        struct View<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a StepError>,
            execution: ExecutionView<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            index: Option<usize>,
            input: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            item: Option<&'a Value>,
            steps: BTreeMap<&'a str, StepView<'a>>,
        }
        let mut steps = BTreeMap::new();
        for id in self.def.steps.keys() {
            let found = scope
                .prefixes
                .iter()
                .find_map(|p| self.state.steps.get(&format!("{p}{id}")));
            if let Some(s) = found {
                steps.insert(
                    id.as_str(),
                    StepView {
                        output: &s.output,
                        status: s.status,
                        error: &s.error,
                    },
                );
            }
        }
        expr::context(&View {
            input: &self.state.input,
            steps,
            execution: ExecutionView {
                id: &self.state.id,
                workflow_id: &self.state.workflow_id,
                workflow_version: self.state.workflow_version,
            },
            item: scope.item.as_ref().map(|(item, _)| item),
            index: scope.item.as_ref().map(|(_, index)| *index),
            error,
        })
    }
}

fn render_request(kind: &StepKind, ctx: &expr::Context) -> Result<Value, StepError> {
    let r = |v: &Value| expr::render_value(v, ctx).map_err(|e| template_error(&e));
    let t = |s: &str| expr::render(s, ctx).map_err(|e| template_error(&e));
    Ok(match kind {
        StepKind::Http {
            method,
            url,
            headers,
            body,
        } => {
            let mut rendered = Map::new();
            let mut secrets = Vec::new();
            for (k, v) in headers {
                let value = if secret_ref::mentions(v) {
                    // Sent as written; the worker puts the secret in at call time.
                    secrets.push(format!("/headers/{}", pointer_token(k)));
                    v.clone()
                } else {
                    t(v)?
                };
                rendered.insert(k.clone(), Value::String(value));
            }
            with_secret_refs(
                json!({
                    "method": method.to_ascii_uppercase(),
                    "url": t(url)?,
                    "headers": rendered,
                    "body": body.as_ref().map(r).transpose()?,
                }),
                secrets,
            )
        }
        StepKind::Subworkflow {
            workflow_id,
            version,
            input,
        } => json!({
            "workflow_id": workflow_id,
            "version": version,
            "input": input.as_ref().map(r).transpose()?.unwrap_or(Value::Object(Map::new())),
        }),
        StepKind::Llm(llm) => json!({
            "provider": llm.provider,
            "model": llm.model,
            "system": llm.system.as_deref().map(t).transpose()?,
            "prompt": t(&llm.prompt)?,
            "temperature": llm.temperature,
            "max_tokens": llm.max_tokens,
            "output_schema": llm.output_schema,
        }),
        StepKind::Mcp {
            server,
            tool,
            arguments,
        } => {
            let mut secrets = Vec::new();
            let arguments = match arguments {
                Some(a) => render_keeping_secrets(a, ctx, "/arguments", &mut secrets)?,
                None => Value::Object(Map::new()),
            };
            with_secret_refs(
                json!({"server": server, "tool": tool, "arguments": arguments}),
                secrets,
            )
        }
        other => json!({"type": other.name()}),
    })
}

/// A request, with where its secret references are when it has any (requests without keep
/// their old shape).
fn with_secret_refs(mut request: Value, refs: Vec<String>) -> Value {
    if !refs.is_empty() {
        request["secret_refs"] = json!(refs);
    }
    request
}

/// A JSON pointer's escaping of one key.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// [`expr::render_value`], except that strings naming a secret stay as written and their
/// pointers are collected.
fn render_keeping_secrets(
    template: &Value,
    ctx: &expr::Context,
    at: &str,
    refs: &mut Vec<String>,
) -> Result<Value, StepError> {
    Ok(match template {
        Value::String(s) if secret_ref::mentions(s) => {
            refs.push(at.to_owned());
            template.clone()
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_keeping_secrets(v, ctx, &format!("{at}/{i}"), refs))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let at = format!("{at}/{}", pointer_token(k));
                    Ok((k.clone(), render_keeping_secrets(v, ctx, &at, refs)?))
                })
                .collect::<Result<_, StepError>>()?,
        ),
        other => expr::render_value(other, ctx).map_err(|e| template_error(&e))?,
    })
}

fn template_error(e: &expr::ExprError) -> StepError {
    StepError::new("TemplateError", e.to_string(), false)
}

fn expression_error(e: &expr::ExprError) -> StepError {
    StepError::new("ExpressionError", e.to_string(), false)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Error kinds a retry or catch names; empty or `*` matches every kind.
fn matches_kind(kinds: &[String], kind: &str) -> bool {
    kinds.is_empty() || kinds.iter().any(|k| k == kind || k == "*")
}

/// Timer ids are deterministic so a replanned timer is the same timer.
pub fn timer_id(key: &str, epoch: u32, attempt: u32, purpose: TimerPurpose) -> String {
    let purpose = match purpose {
        TimerPurpose::Wait => "wait",
        TimerPurpose::Retry => "retry",
        TimerPurpose::Timeout => "timeout",
        TimerPurpose::ApprovalTimeout => "approval",
    };
    format!("{key}@{epoch}.{attempt}:{purpose}")
}

/// `now + secs`, refused past [`MAX_DURATION_SECS`] (validation refuses it too; this keeps a
/// definition stored before that bound from overflowing the clock).
fn later(now: DateTime<Utc>, secs: u64) -> Result<DateTime<Utc>, StepError> {
    (secs <= MAX_DURATION_SECS)
        .then(|| now.checked_add_signed(Duration::seconds(secs as i64)))
        .flatten()
        .ok_or_else(|| {
            StepError::new(
                "InvalidDuration",
                format!("{secs} seconds is longer than the most a step may wait ({MAX_DURATION_SECS} s)"),
                false,
            )
        })
}

fn within_reach(now: DateTime<Utc>, due: DateTime<Utc>) -> Result<DateTime<Utc>, StepError> {
    if due > now + Duration::seconds(MAX_DURATION_SECS as i64) {
        return Err(StepError::new(
            "InvalidDuration",
            format!("`until` is {due}, further ahead than the most a step may wait ({MAX_DURATION_SECS} s)"),
            false,
        ));
    }
    Ok(due)
}

/// The delay before attempt `failed + 1`: initial × rate^(failed-1), capped, and with jitter
/// spread over [delay/2, delay] by a hash of the timer id (deterministic, yet different per step).
pub fn backoff(policy: &RetryPolicy, failed: u32, seed: &str) -> Duration {
    let exp = policy.backoff_rate.powi(failed.saturating_sub(1) as i32);
    let mut ms = policy.initial_interval_ms as f64 * exp;
    if let Some(max) = policy.max_interval_ms {
        ms = ms.min(max as f64);
    }
    if policy.jitter {
        let h = Sha256::digest(seed.as_bytes());
        let r = u16::from_be_bytes([h[0], h[1]]) as f64 / u16::MAX as f64;
        ms *= 0.5 + 0.5 * r;
    }
    Duration::milliseconds(ms.min(86_400_000.0) as i64)
}
