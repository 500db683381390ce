//! Rebuilding the read models from the events: every execution stream (found by its first event,
//! `ExecutionStarted` at version 1) is replayed and its summary written over the stored one. Since
//! summaries are a pure function of the events, a rebuild yields the live projection exactly; use it
//! after a projection bug, or to fill a new read model.

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::execution::Summary;
use crate::events::StreamId;
use crate::executions::{ExecutionRepo, Projections};

/// Rebuilds the summaries of one tenant (or of every tenant); returns how many were written.
pub async fn rebuild_summaries(
    dynamodb: &aws_sdk_dynamodb::Client,
    events_table: &str,
    repo: &ExecutionRepo,
    projections: &Projections,
    tenant: Option<&str>,
) -> Result<usize, String> {
    let mut written = 0;
    let mut start = None;
    loop {
        let mut scan = dynamodb
            .scan()
            .table_name(events_table)
            .projection_expression("stream_id")
            .filter_expression(match tenant {
                Some(_) => {
                    "version = :one AND event_type = :started AND begins_with(stream_id, :prefix)"
                }
                None => "version = :one AND event_type = :started",
            })
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":started", AttributeValue::S("ExecutionStarted".into()))
            .set_exclusive_start_key(start);
        if let Some(t) = tenant {
            scan = scan.expression_attribute_values(
                ":prefix",
                AttributeValue::S(format!("{t}#execution#")),
            );
        }
        let page = scan
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        for item in page.items.unwrap_or_default() {
            let Some(AttributeValue::S(raw)) = item.get("stream_id") else {
                continue;
            };
            let stream = StreamId::try_from(raw.clone()).map_err(|e| e.to_string())?;
            let loaded = repo
                .load(&stream)
                .await
                .map_err(|e| format!("{stream}: {e}"))?;
            projections
                .replace_summary(stream.tenant(), &Summary::of(&loaded.state).listing())
                .await
                .map_err(|e| e.to_string())?;
            written += 1;
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(written);
        }
    }
}
