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
use crate::events::{StoreError, StreamId};
use crate::executions::projection::TIMER_SHARDS;
use crate::executions::{Cause, ExecutionRepo, Projections, RepoError, TimerRow};

const PAGE: u32 = 100;
/// A failing timer is tried again after 5 s, doubling, at most an hour apart.
const MAX_RETRY_PAUSE_SECS: i64 = 3600;
/// Lost races on a busy stream before a timer is postponed (each is itself several tries).
const FIRE_RETRIES: u32 = 3;
/// How far a timer that lost its races is moved back.
const CONTENDED_PAUSE_SECS: i64 = 2;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fired {
    pub fired: usize,
    pub failed: usize,
    /// The run stopped at its deadline with timers left for the next one.
    pub deferred: bool,
}

enum Outcome {
    Fired,
    Dropped,
    Failed,
}

/// Fires due timers until none is left or `deadline` (the invocation's end, less a margin) comes:
/// one page of each shard per pass, starting at a different shard each run, so a backlog in one
/// shard never starves the others and a run that is cut short resumes next tick.
pub async fn fire_due(
    repo: &ExecutionRepo,
    projections: &Projections,
    now: DateTime<Utc>,
    deadline: std::time::Instant,
) -> Result<Fired, String> {
    let mut result = Fired::default();
    let first = (now.timestamp().unsigned_abs() % u64::from(TIMER_SHARDS)) as u32;
    // Per shard: where its listing continues, or `None` once it is done.
    let mut cursors: Vec<(u32, Option<Option<TimerRow>>)> = (0..TIMER_SHARDS)
        .map(|i| ((first + i) % TIMER_SHARDS, Some(None)))
        .collect();
    while cursors.iter().any(|(_, c)| c.is_some()) {
        for (shard, cursor) in cursors.iter_mut() {
            let Some(start) = cursor.take() else { continue };
            if std::time::Instant::now() >= deadline {
                result.deferred = true;
                return Ok(result);
            }
            let (due, more) = projections
                .due_timers(*shard, now, PAGE, start.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            for row in &due {
                if std::time::Instant::now() >= deadline {
                    result.deferred = true;
                    return Ok(result);
                }
                match fire_one(repo, projections, row, now).await {
                    Outcome::Fired => result.fired += 1,
                    Outcome::Dropped => {}
                    Outcome::Failed => result.failed += 1,
                }
            }
            if more {
                *cursor = due.last().cloned().map(Some);
            }
        }
    }
    Ok(result)
}

/// The epoch a timer belongs to, from its id (`<key>@<epoch>.<attempt>:<purpose>`).
fn timer_epoch(timer_id: &str) -> Option<u32> {
    let (guarded, _) = timer_id.rsplit_once(':')?;
    let (_, epoch_attempt) = guarded.rsplit_once('@')?;
    epoch_attempt.split_once('.')?.0.parse().ok()
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
    // An ended execution takes no more events, and a redrive's new epoch makes the old epoch's
    // timers moot: those rows go unfired (a consistent read: dropping a live timer would hang it).
    if let Some(epoch) = timer_epoch(&row.timer_id) {
        if let Ok(Some(progress)) = projections.progress(&tenant, &execution_id, true).await {
            if progress.supersedes(epoch) {
                tracing::debug!(timer = %row.timer_id, "execution ended or redriven; timer removed");
                let _ = projections.delete_timer(row).await;
                return Outcome::Dropped;
            }
        }
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
    // A few tries only: a stream that stays contended gets its timer postponed rather than
    // holding up every timer behind it.
    let appended = repo
        .append_any_within(
            &stream,
            vec![event],
            &cause,
            Some(format!("fired:{}", row.timer_id)),
            FIRE_RETRIES,
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
            // Lost races on a busy stream are retried soon and do not lengthen the back-off;
            // anything else backs off further each time.
            let contended = matches!(e, RepoError::Store(StoreError::Conflict { .. }));
            let pause = if contended {
                CONTENDED_PAUSE_SECS
            } else {
                (5i64 << row.failures.min(20)).min(MAX_RETRY_PAUSE_SECS)
            };
            tracing::warn!(timer = %row.timer_id, failures = row.failures + 1, error = %e, "could not fire timer; retried in {pause} s");
            if let Err(e) = projections
                .postpone_timer(row, now + Duration::seconds(pause), !contended)
                .await
            {
                tracing::warn!(timer = %row.timer_id, error = %e, "could not postpone timer; next run retries");
            }
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_timer_id_names_its_epoch() {
        assert_eq!(super::timer_epoch("each[3]/call@2.1:timeout"), Some(2));
        assert_eq!(super::timer_epoch("wait@0.1:wait"), Some(0));
        assert_eq!(super::timer_epoch("odd"), None);
    }
}
