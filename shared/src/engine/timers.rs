//! The timer function's work: fire every due timer as a `TimerFired` event (once per timer, by
//! idempotency key), then remove its row. A crash between the two fires nothing twice: the next
//! run appends again, gets the first append back, and removes the row.
//!
//! Rows are spread over `TIMER_SHARDS` partitions, read page after page (a row that cannot be
//! fired never hides the rows behind it), and a row that fails moves later with a growing pause
//! instead of being retried at the head of every run. Timers of an execution that has ended are
//! removed without firing: nothing is appended after an execution's terminal event.

use chrono::{DateTime, Duration, Utc};

use crate::domain::execution::ExecutionEvent;
use crate::events::StreamId;
use crate::executions::projection::TIMER_SHARDS;
use crate::executions::{Cause, ExecutionRepo, Projections, TimerRow};

const PAGE: u32 = 100;
/// A failing timer is tried again after 5 s, doubling, at most an hour apart.
const MAX_RETRY_PAUSE_SECS: i64 = 3600;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fired {
    pub fired: usize,
    pub failed: usize,
}

enum Outcome {
    Fired,
    Dropped,
    Failed,
}

pub async fn fire_due(
    repo: &ExecutionRepo,
    projections: &Projections,
    now: DateTime<Utc>,
) -> Result<Fired, String> {
    let mut result = Fired::default();
    for shard in 0..TIMER_SHARDS {
        let mut start: Option<TimerRow> = None;
        loop {
            let (due, more) = projections
                .due_timers(shard, now, PAGE, start.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            for row in &due {
                match fire_one(repo, projections, row, now).await {
                    Outcome::Fired => result.fired += 1,
                    Outcome::Dropped => {}
                    Outcome::Failed => result.failed += 1,
                }
            }
            start = due.last().cloned();
            if !more || start.is_none() {
                break;
            }
        }
    }
    Ok(result)
}

async fn fire_one(
    repo: &ExecutionRepo,
    projections: &Projections,
    row: &TimerRow,
    now: DateTime<Utc>,
) -> Outcome {
    let Ok(stream) = StreamId::try_from(row.stream_id.clone()) else {
        tracing::error!(row = ?row, "timer row with an invalid stream id; removed");
        let _ = projections.delete_timer(row).await;
        return Outcome::Dropped;
    };
    let tenant = stream.tenant().to_owned();
    let execution_id = stream.id().to_owned();
    // An ended execution takes no more events; its leftover timers go.
    if let Ok(Some((status, _))) = projections.ended(&tenant, &execution_id).await {
        tracing::debug!(timer = %row.timer_id, status, "execution ended; timer removed");
        let _ = projections.delete_timer(row).await;
        return Outcome::Dropped;
    }
    let cause = Cause {
        tenant: &tenant,
        actor: "timer",
        correlation_id: &execution_id,
        causation_id: None,
        at: now,
    };
    let event = ExecutionEvent::TimerFired {
        timer_id: row.timer_id.clone(),
    };
    let appended = repo
        .append_any(
            &stream,
            vec![event],
            &cause,
            Some(format!("fired:{}", row.timer_id)),
        )
        .await;
    match appended {
        Ok(_) => match projections.delete_timer(row).await {
            Ok(()) => Outcome::Fired,
            Err(e) => {
                // Fired; the next run appends again (idempotent) and removes the row.
                tracing::warn!(timer = %row.timer_id, error = %e, "fired, but its row stays for now");
                Outcome::Fired
            }
        },
        Err(e) => {
            let pause = (5i64 << row.failures.min(20)).min(MAX_RETRY_PAUSE_SECS);
            tracing::warn!(timer = %row.timer_id, failures = row.failures + 1, error = %e, "could not fire timer; retried in {pause} s");
            if let Err(e) = projections
                .postpone_timer(row, now + Duration::seconds(pause))
                .await
            {
                tracing::warn!(timer = %row.timer_id, error = %e, "could not postpone timer; next run retries");
            }
            Outcome::Failed
        }
    }
}
