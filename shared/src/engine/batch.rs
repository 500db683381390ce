//! Stream batches as Lambda delivers them: records decoded and grouped by execution, executions
//! handled concurrently, and partial batch failures reported so only what failed transiently is
//! redelivered. A record that can never be processed fails its execution with the reason and
//! is not reported, so it never blocks the shard.

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use std::panic::AssertUnwindSafe;

use super::orchestrator::TurnError;
use super::worker::Done;
use super::{Orchestrator, Worker};
use crate::domain::execution::StepError;
use crate::events::{decode_stream_record, Envelope, StreamId, Upcasters};
use crate::executions::RepoError;

/// Executions (orchestrator) or tasks (worker) handled at once within one batch.
const CONCURRENCY: usize = 16;

struct Group {
    stream: StreamId,
    first_sequence: String,
    events: Vec<Envelope>,
}

/// Groups the batch's events by stream, keeping stream order; undecodable records are logged and
/// their execution (when the record names one) is failed by the caller.
/// A record that cannot be read: its stream (when it names one), sequence number and the reason.
type Poisoned = (Option<StreamId>, String, String);

fn group(event: &Event, upcasters: &Upcasters) -> (Vec<Group>, Vec<Poisoned>) {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut order = Vec::new();
    let mut poisoned = Vec::new();
    for record in &event.records {
        let sequence = record.change.sequence_number.clone().unwrap_or_default();
        match decode_stream_record(record, upcasters) {
            // Other streams (budget alerts) share the table; they are not executions.
            Ok(Some(envelope))
                if envelope.stream_id.category() != crate::executions::repo::CATEGORY => {}
            Ok(Some(envelope)) => {
                let key = envelope.stream_id.to_string();
                if !groups.contains_key(&key) {
                    order.push(key.clone());
                }
                groups
                    .entry(key)
                    .or_insert_with(|| Group {
                        stream: envelope.stream_id.clone(),
                        first_sequence: sequence,
                        events: Vec::new(),
                    })
                    .events
                    .push(envelope);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(sequence = %sequence, error = %e, "unreadable stream record");
                poisoned.push((record_stream(record), sequence.clone(), e.to_string()));
            }
        }
    }
    let groups = order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .collect();
    (groups, poisoned)
}

/// The stream a record names, when it names a valid one.
fn record_stream(record: &aws_lambda_events::dynamodb::EventRecord) -> Option<StreamId> {
    record
        .change
        .new_image
        .get("stream_id")
        .and_then(|v| match v {
            serde_dynamo::AttributeValue::S(s) => StreamId::try_from(s.clone()).ok(),
            _ => None,
        })
}

fn failures(sequences: Vec<String>) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = sequences
        .into_iter()
        .map(|s| {
            let mut f = DynamoDbBatchItemFailure::default();
            f.item_identifier = Some(s);
            f
        })
        .collect();
    response
}

/// The stream processor's handler.
pub async fn orchestrate(
    o: &Orchestrator,
    event: Event,
    upcasters: &Upcasters,
) -> DynamoDbEventResponse {
    let now = Utc::now();
    let (groups, poisoned) = group(&event, upcasters);
    for (stream, sequence, reason) in poisoned {
        if let Some(stream) = stream.filter(|s| s.category() == crate::executions::repo::CATEGORY) {
            let error = StepError::new(
                "OrchestrationError",
                format!("an event could not be read: {reason}"),
                false,
            );
            if let Err(e) = o.fail(&stream, None, &sequence, error, now).await {
                tracing::error!(stream = %stream, error = %e, "could not fail the execution of an unreadable event");
            }
        }
    }
    let failed: Vec<String> = futures::stream::iter(groups)
        .map(|g| async move {
            // A panic in one execution's turn (a bug, or a definition that trips one) fails that
            // execution only; the rest of the batch and the shard go on.
            let turn = AssertUnwindSafe(o.turn(&g.stream, &g.events, now))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(TurnError::Panicked(panic_message(&*panic))));
            match turn {
                Ok(turn) => {
                    tracing::debug!(stream = %g.stream, ?turn, "turn");
                    None
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(stream = %g.stream, error = %e, "turn failed; the batch will be redelivered from here");
                    Some(g.first_sequence)
                }
                Err(e) => {
                    tracing::error!(stream = %g.stream, error = %e, "execution cannot go on");
                    let error = StepError::new("OrchestrationError", e.to_string(), false);
                    match o
                        .fail(&g.stream, None, &g.first_sequence, error, now)
                        .await
                    {
                        Ok(()) => None,
                        Err(_) => Some(g.first_sequence),
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    failures(failed)
}

/// The step worker's handler (its event filter delivers only `StepScheduled`). Every task must be
/// done by `deadline` (the invocation's end, less a margin): one that is not is handed back for
/// redelivery, so a slow call never turns into Lambda's timeout killing the whole batch, and the
/// tasks that did finish stay finished.
pub async fn work(
    w: &Worker,
    event: Event,
    upcasters: &Upcasters,
    deadline: tokio::time::Instant,
) -> DynamoDbEventResponse {
    // Side effects stop early enough to leave time for their bookkeeping (settling the budget,
    // appending the outcome); the hand-back at `deadline` is the last resort.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let calls_until = deadline - (left / 5).min(std::time::Duration::from_secs(10));
    // Each task on its own, so only a failed one (and what follows it) is redelivered.
    let mut tasks: Vec<(String, Envelope)> = Vec::new();
    for record in &event.records {
        let seq = record.change.sequence_number.clone().unwrap_or_default();
        match decode_stream_record(record, upcasters) {
            Ok(Some(envelope)) => tasks.push((seq, envelope)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(sequence = %seq, error = %e, "unreadable task record");
                // The orchestrator is not sent task records (its filter), so the execution is
                // failed here: nothing would ever perform this task.
                let Some(stream) = record_stream(record)
                    .filter(|s| s.category() == crate::executions::repo::CATEGORY)
                else {
                    continue;
                };
                let error = StepError::new(
                    "OrchestrationError",
                    format!("a task could not be read: {e}"),
                    false,
                );
                if let Err(e) = w.fail_execution(&stream, &seq, error).await {
                    tracing::error!(stream = %stream, error = %e, "could not fail the execution of an unreadable task");
                }
            }
        }
    }
    let failed: Vec<String> = futures::stream::iter(tasks)
        .map(|(seq, envelope)| async move {
            let task = AssertUnwindSafe(w.handle_until(&envelope, Some(calls_until))).catch_unwind();
            let Ok(handled) = tokio::time::timeout_at(deadline, task).await else {
                tracing::warn!(stream = %envelope.stream_id, "task not done before the invocation's deadline; handed back");
                return Some(seq);
            };
            let handled = handled.unwrap_or_else(|panic| {
                Err(RepoError::Store(crate::events::StoreError::Backend(format!(
                    "the worker panicked: {}",
                    panic_message(&*panic)
                ))))
            });
            match handled {
                Ok(done) => {
                    if done != Done::Ignored {
                        tracing::debug!(stream = %envelope.stream_id, ?done, "task");
                    }
                    None
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(stream = %envelope.stream_id, error = %e, "task failed; redelivering");
                    Some(seq)
                }
                Err(e @ RepoError::Decode { .. }) => {
                    // A history that cannot be read (this task's event or one after it): the
                    // orchestrator, which is not sent task records, would fail it the same way.
                    tracing::error!(stream = %envelope.stream_id, error = %e, "task cannot be read");
                    let error = StepError::new(
                        "OrchestrationError",
                        format!("an event could not be read: {e}"),
                        false,
                    );
                    if let Err(e) = w.fail_execution(&envelope.stream_id, &seq, error).await {
                        tracing::error!(stream = %envelope.stream_id, error = %e, "could not fail the execution of an unreadable task");
                    }
                    None
                }
                Err(e) => {
                    tracing::error!(stream = %envelope.stream_id, error = %e, "task cannot be performed");
                    None
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    failures(failed)
}

/// What a caught panic said, for the execution's error.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// When work in an invocation with `time_left` must stop: a tenth of it (at most 3 s) is kept to
/// report back before Lambda's timeout.
pub fn deadline(time_left: std::time::Duration) -> tokio::time::Instant {
    let margin = (time_left / 10).min(std::time::Duration::from_secs(3));
    tokio::time::Instant::now() + time_left.saturating_sub(margin)
}
