//! The timer function's work: fire every due timer as a `TimerFired` event (once per timer, by
//! idempotency key), then remove its row. A crash between the two fires nothing twice: the next
//! run appends again, gets the first append back, and removes the row.

use chrono::{DateTime, Utc};

use crate::domain::execution::ExecutionEvent;
use crate::events::StreamId;
use crate::executions::{Cause, ExecutionRepo, Projections};

const PAGE: u32 = 100;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fired {
    pub fired: usize,
    pub failed: usize,
}

pub async fn fire_due(
    repo: &ExecutionRepo,
    projections: &Projections,
    now: DateTime<Utc>,
) -> Result<Fired, String> {
    let mut result = Fired::default();
    loop {
        let due = projections
            .due_timers(now, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let page = due.len();
        let before = result.fired;
        for row in due {
            let Ok(stream) = StreamId::try_from(row.stream_id.clone()) else {
                tracing::error!(row = ?row, "timer row with an invalid stream id; removed");
                let _ = projections.delete_timer(&row).await;
                continue;
            };
            let tenant = stream.tenant().to_owned();
            let execution_id = stream
                .as_str()
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_owned();
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
            match repo
                .append_any(
                    &stream,
                    vec![event],
                    &cause,
                    Some(format!("fired:{}", row.timer_id)),
                )
                .await
            {
                Ok(_) => {
                    projections
                        .delete_timer(&row)
                        .await
                        .map_err(|e| e.to_string())?;
                    result.fired += 1;
                }
                Err(e) => {
                    tracing::warn!(timer = %row.timer_id, error = %e, "could not fire timer; next run retries");
                    result.failed += 1;
                }
            }
        }
        // Stop when the page was short, or nothing could be fired (do not spin on failures).
        if page < PAGE as usize || result.fired == before {
            return Ok(result);
        }
    }
}
