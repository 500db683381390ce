//! The scheduled sweep's budget part: reservations whose settlement never landed (the worker
//! died after the call, or the settlement kept conflicting) are settled from the step's recorded
//! outcome, so the books end exact and nothing stays reserved. Runs with the timer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::budget::Budgets;
use crate::domain::execution::ExecutionEvent as E;
use crate::domain::execution::Usage;
use crate::events::{Envelope, StreamId};
use crate::executions::{repo::decode, ExecutionRepo};

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
