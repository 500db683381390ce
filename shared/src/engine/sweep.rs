//! The scheduled sweep's budget part: reservations whose settlement never landed (the worker
//! died after the call, or the settlement kept conflicting) are settled from the step's recorded
//! outcome, so the books end exact and nothing stays reserved. Runs with the timer.

use std::collections::HashMap;

use futures::FutureExt;

use chrono::{DateTime, Utc};

use super::budget::Budgets;
use crate::domain::execution::ExecutionEvent as E;
use crate::domain::execution::Usage;
use crate::events::{Envelope, StreamId};
use crate::executions::{repo::decode, ExecutionRepo};

/// Past the stream mappings' maximum record age (12 h) with a margin: no delivery of a task's
/// record can still come.
const TASK_LOST_AFTER_SECS: i64 = 13 * 3600;

/// Reservations examined per shard and run; the rest wait for the next run.
const PAGE: i32 = 50;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Settled with the usage the step recorded.
    pub settled: usize,
    /// Given back: the attempt recorded no usage, or no outcome at all past the grace period.
    pub released: usize,
    pub failed: usize,
}

/// What the execution's history says about one attempt.
enum Recorded {
    Usage(Usage),
    NoUsage,
    Nothing,
}

/// Settles every reservation held since before `now - grace`. `grace` must exceed the worker's
/// timeout, so that no attempt still in flight is touched.
pub async fn settle_stale_holds(
    budgets: &Budgets,
    repo: &ExecutionRepo,
    now: DateTime<Utc>,
    grace: chrono::Duration,
    deadline: std::time::Instant,
) -> Result<Swept, String> {
    let mut swept = Swept::default();
    let stale = budgets
        .held_before(now - grace, PAGE)
        .await
        .map_err(|e| e.to_string())?;
    // One read of each execution's history, however many of its attempts are held.
    let mut histories = HashMap::new();
    for (tenant, attempt) in stale {
        if std::time::Instant::now() >= deadline {
            break; // the rest next run
        }
        match settle_one(budgets, repo, &mut histories, &tenant, &attempt).await {
            Ok(Some(true)) => swept.settled += 1,
            Ok(Some(false)) => swept.released += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(tenant, attempt, error = %e, "could not settle a stale reservation; next run retries");
                swept.failed += 1;
            }
        }
    }
    Ok(swept)
}

/// `Some(true)` settled with usage, `Some(false)` released, `None` already gone.
async fn settle_one(
    budgets: &Budgets,
    repo: &ExecutionRepo,
    histories: &mut HashMap<String, Vec<Envelope>>,
    tenant: &str,
    attempt: &str,
) -> Result<Option<bool>, String> {
    let Some(reservation) = budgets
        .held(tenant, attempt)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let recorded = match reservation.execution_id() {
        Some(id) => recorded(repo, histories, tenant, id, attempt).await?,
        None => Recorded::Nothing,
    };
    let (usd, tokens, with_usage) = match recorded {
        Recorded::Usage(u) => (u.cost_usd, u.input_tokens + u.output_tokens, true),
        Recorded::NoUsage => (0.0, 0, false),
        Recorded::Nothing => {
            tracing::warn!(
                tenant,
                attempt,
                "a reservation outlived its attempt without an outcome; released"
            );
            (0.0, 0, false)
        }
    };
    budgets
        .settle(&reservation, usd, tokens)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(with_usage))
}

async fn recorded(
    repo: &ExecutionRepo,
    histories: &mut HashMap<String, Vec<Envelope>>,
    tenant: &str,
    execution_id: &str,
    attempt: &str,
) -> Result<Recorded, String> {
    let stream = StreamId::new(tenant, crate::executions::repo::CATEGORY, execution_id)
        .map_err(|e| e.to_string())?;
    if !histories.contains_key(stream.as_str()) {
        let events = repo
            .store()
            .read_from(&stream, 1)
            .await
            .map_err(|e| e.to_string())?;
        histories.insert(stream.to_string(), events);
    }
    for envelope in &histories[stream.as_str()] {
        // An event that cannot be read is not this attempt's outcome; it must not keep the
        // reservation held forever.
        let (key, epoch, n, usage) = match decode(envelope) {
            Ok(E::StepSucceeded {
                key,
                epoch,
                attempt,
                usage,
                ..
            })
            | Ok(E::StepFailed {
                key,
                epoch,
                attempt,
                usage,
                ..
            }) => (key, epoch, attempt, usage),
            _ => continue,
        };
        if super::worker::attempt_name(&stream, &key, epoch, n) == attempt {
            return Ok(usage.map_or(Recorded::NoUsage, Recorded::Usage));
        }
    }
    Ok(Recorded::Nothing)
}

/// What the stalled-execution sweep did in one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stalls {
    /// A turn appended the next events: the execution moves again.
    pub redriven: usize,
    /// Nothing could move it and nothing is pending: failed as `Stalled`.
    pub failed: usize,
    /// Idle on purpose (a task in flight, a timer, an approval): looked at again later.
    pub waiting: usize,
    pub errors: usize,
}

/// Finds running executions idle since before `now - idle` (the sparse `active` index) and
/// gives each one turn: one whose events were never orchestrated (a stream record lost or given
/// up on) moves on; one waiting on purpose is left alone; one that nothing can move is failed
/// with `Stalled` instead of staying `running` for ever.
pub async fn redrive_stalled(
    orchestrator: &super::Orchestrator,
    repo: &ExecutionRepo,
    projections: &crate::executions::Projections,
    now: DateTime<Utc>,
    idle: chrono::Duration,
    deadline: std::time::Instant,
) -> Result<Stalls, String> {
    let mut stalls = Stalls::default();
    let idle_ones = projections
        .idle_since(now - idle, PAGE)
        .await
        .map_err(|e| e.to_string())?;
    for (tenant, id) in idle_ones {
        if std::time::Instant::now() >= deadline {
            break;
        }
        match redrive_one(orchestrator, repo, projections, &tenant, &id, now).await {
            Ok(Some(true)) => stalls.redriven += 1,
            Ok(Some(false)) => stalls.waiting += 1,
            Ok(None) => stalls.failed += 1,
            Err(e) => {
                tracing::warn!(tenant, execution = id, error = %e, "stalled-execution check failed; looked at again after another idle period");
                // Moved back in the queue, so a few that always fail never hide the others.
                let _ = projections.touch_active(&tenant, &id, now).await;
                stalls.errors += 1;
            }
        }
    }
    Ok(stalls)
}

/// `Some(true)` moved, `Some(false)` waiting (or not running after all), `None` failed.
async fn redrive_one(
    orchestrator: &super::Orchestrator,
    repo: &ExecutionRepo,
    projections: &crate::executions::Projections,
    tenant: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<bool>, String> {
    let stream = crate::executions::stream_id(tenant, id).map_err(|e| e.to_string())?;
    let stalled = |why: String| crate::domain::execution::StepError::new("Stalled", why, false);
    let turn = std::panic::AssertUnwindSafe(orchestrator.turn(&stream, &[], now))
        .catch_unwind()
        .await;
    let turn = match turn {
        Ok(turn) => turn.map_err(|e| e.to_string())?,
        Err(panic) => {
            let error = stalled(format!(
                "the execution stopped making progress: its next turn cannot be computed ({})",
                super::batch::panic_message(&*panic)
            ));
            orchestrator
                .fail(&stream, None, "stalled", error, now)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
    };
    if turn.appended > 0 {
        tracing::warn!(
            tenant,
            execution = id,
            "a stalled execution was moved on by the sweep"
        );
        return Ok(Some(true));
    }
    let state = repo.load(&stream).await.map_err(|e| e.to_string())?.state;
    if state.status.is_terminal() {
        return Ok(Some(false)); // its summary was behind; the turn above rewrote it
    }
    // Timer rows are written from stream batches; one whose batch never arrived is written again
    // (idempotent: the same key).
    for (timer_id, t) in state.timers.iter().filter(|(_, t)| !t.fired) {
        projections
            .put_timer(stream.as_str(), timer_id, t.due_at)
            .await
            .map_err(|e| e.to_string())?;
    }
    // A task no worker took up long after every stream mapping would have given its record up
    // (12 h maximum record age) is lost: its attempt fails as retryable `TaskLost`, so the step's
    // policy decides, instead of the step waiting for ever. The sweep takes the attempt's claim
    // first (the key workers claim it under): an http or mcp attempt shows as scheduled while its
    // call runs, so a taken claim means a worker has it; a won claim means no worker ever will.
    let stale = chrono::Duration::seconds(TASK_LOST_AFTER_SECS);
    let mut lost: Vec<E> = Vec::new();
    for (key, s) in state.steps.iter().filter(|(_, s)| {
        s.status == crate::domain::execution::StepStatus::Scheduled
            && s.scheduled_at.is_some_and(|t| t < now - stale)
    }) {
        let claim = format!("started:{key}@{}.{}", s.epoch, s.attempt);
        if !repo
            .store()
            .claim(&stream, &claim)
            .await
            .map_err(|e| e.to_string())?
        {
            continue;
        }
        lost.push(E::outcome(
            key.clone(),
            s.step.clone(),
            s.epoch,
            s.attempt,
            Err(crate::domain::execution::StepError::new(
                "TaskLost",
                "no worker took this attempt up before its stream record expired",
                true,
            )),
        ));
    }
    if !lost.is_empty() {
        let cause = crate::executions::Cause {
            tenant,
            actor: "sweep",
            correlation_id: id,
            causation_id: None,
            at: now,
        };
        return match repo
            .append(
                &stream,
                crate::events::ExpectedVersion::Exact(state.version),
                lost,
                &cause,
                None,
            )
            .await
        {
            Ok(_)
            | Err(crate::executions::RepoError::Store(crate::events::StoreError::Conflict {
                ..
            })) => Ok(Some(true)),
            Err(e) => Err(e.to_string()),
        };
    }
    let waiting = !state.pending_steps().is_empty() || state.timers.values().any(|t| !t.fired);
    // Its turn has events to append but lost every race (a busy stream): it can move, so it
    // is looked at again later rather than failed.
    let movable = !crate::domain::execution::decide(&state, now).1.is_empty();
    if !waiting && !movable {
        let error = stalled(
            "the execution stopped making progress: nothing was pending and no step could run"
                .into(),
        );
        // At the version just read: if anything was appended since (an outcome, an approval),
        // the execution is moving after all and is not failed.
        return match orchestrator.fail_at(&stream, &state, error, now).await {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(true)),
            Err(e) => Err(e.to_string()),
        };
    }
    projections
        .touch_active(tenant, id, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(false))
}
