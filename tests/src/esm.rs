//! The DynamoDB Streams event-source mapping, run locally: per stream function, its own position
//! in the stream, its batch size, its filter criteria and its partial-batch-failure semantics,
//! all read from the template.
//!
//! Semantics kept from Lambda:
//! - records that match none of the function's filters are skipped (and never delivered);
//! - a batch holds at most `BatchSize` matching records, in stream order;
//! - with `ReportBatchItemFailures`, the function's `batchItemFailures` make the next batch start at
//!   the first failed record (records before it are done); an empty list means all succeeded;
//! - a failed invocation (error) retries the whole batch;
//! - after `MaximumRetryAttempts` retries of one batch, it is skipped and logged, so one poisoned
//!   record never blocks the shard; with `DestinationConfig.OnFailure`, the batch's invocation
//!   record goes to that SQS queue (see `failures`), from which it can be replayed.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbEventResponse;
use serde_json::{json, Value};

use crate::streams::StreamReader;
use crate::template::Template;

/// One event-source mapping of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub function: String,
    /// Logical id of the table whose stream is read.
    pub table: String,
    pub batch_size: usize,
    /// Lambda filter patterns (`FilterCriteria.Filters[].Pattern`); empty means everything.
    pub filters: Vec<Value>,
    pub report_failures: bool,
    /// `None`: retry until it succeeds (Lambda's -1).
    pub max_retries: Option<u32>,
    /// Logical id of the SQS queue of `DestinationConfig.OnFailure`.
    pub on_failure: Option<String>,
}

/// Every `DynamoDB` event of every function in the template.
pub fn mappings(template: &Template) -> Vec<Mapping> {
    let mut out = Vec::new();
    for function in template.resource_ids("AWS::Serverless::Function") {
        let Some(events) = template.raw_events(&function) else {
            continue;
        };
        for event in events.values().filter(|e| e["Type"] == "DynamoDB") {
            let p = &event["Properties"];
            let table = match &p["Stream"] {
                Value::Object(m) => m
                    .get("Fn::GetAtt")
                    .and_then(|v| match v {
                        Value::String(s) => s.split('.').next().map(str::to_owned),
                        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
                        _ => None,
                    })
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let filters = p["FilterCriteria"]["Filters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    f["Pattern"]
                        .as_str()
                        .and_then(|s| serde_json::from_str(s).ok())
                })
                .collect();
            out.push(Mapping {
                function: function.clone(),
                table,
                batch_size: p["BatchSize"].as_u64().unwrap_or(100) as usize,
                filters,
                report_failures: p["FunctionResponseTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "ReportBatchItemFailures")),
                max_retries: p["MaximumRetryAttempts"]
                    .as_i64()
                    .filter(|n| *n >= 0)
                    .map(|n| n as u32),
                on_failure: p["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"]
                    .as_str()
                    .map(|s| s.split('.').next().unwrap_or_default().to_owned())
                    .or_else(|| {
                        p["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
                            .as_str()
                            .map(str::to_owned)
                    }),
            });
        }
    }
    out
}

/// Lambda event filtering: does `record` match `pattern`? Supports exact values, `prefix`,
/// `exists`, `anything-but` and `numeric` (`=`, `<`, `<=`, `>`, `>=`) matchers.
pub fn matches(pattern: &Value, record: &Value) -> bool {
    match pattern {
        Value::Object(fields) => fields.iter().all(|(k, p)| match p {
            Value::Array(allowed) => allowed.iter().any(|a| matches_value(a, record.get(k))),
            Value::Object(_) => match record.get(k) {
                Some(v) => matches(p, v),
                // Lambda matches on leaf paths: a missing branch satisfies only `exists: false`.
                None => only_absent(p),
            },
            _ => false,
        }),
        _ => false,
    }
}

/// Whether a pattern holds for a record without its branch: every leaf asks for absence.
fn only_absent(pattern: &Value) -> bool {
    match pattern {
        Value::Object(fields) => fields.values().all(only_absent),
        Value::Array(allowed) => allowed.iter().any(|a| matches_value(a, None)),
        _ => false,
    }
}

fn matches_value(allowed: &Value, actual: Option<&Value>) -> bool {
    match allowed {
        Value::Object(rule) => {
            if let Some(exists) = rule.get("exists").and_then(Value::as_bool) {
                return actual.is_some() == exists;
            }
            let Some(actual) = actual else { return false };
            if let Some(prefix) = rule.get("prefix").and_then(Value::as_str) {
                return actual.as_str().is_some_and(|s| s.starts_with(prefix));
            }
            if let Some(but) = rule.get("anything-but") {
                let excluded = match but {
                    Value::Array(list) => list.contains(actual),
                    single => single == actual,
                };
                return !excluded;
            }
            if let Some(Value::Array(ops)) = rule.get("numeric") {
                let Some(n) = actual
                    .as_f64()
                    .or_else(|| actual.as_str().and_then(|s| s.parse().ok()))
                else {
                    return false;
                };
                return ops.chunks(2).all(|op| {
                    match (op[0].as_str(), op.get(1).and_then(Value::as_f64)) {
                        (Some("="), Some(v)) => n == v,
                        (Some("<"), Some(v)) => n < v,
                        (Some("<="), Some(v)) => n <= v,
                        (Some(">"), Some(v)) => n > v,
                        (Some(">="), Some(v)) => n >= v,
                        _ => false,
                    }
                });
            }
            false
        }
        exact => actual == Some(exact),
    }
}

/// What a stream function does with a batch: its `DynamoDbEventResponse`, or an invocation error.
pub type Handler = Arc<
    dyn Fn(Event) -> Pin<Box<dyn Future<Output = Result<DynamoDbEventResponse, String>> + Send>>
        + Send
        + Sync,
>;

/// Delivery state of one mapping: matching records not yet done, and retries of the head batch.
pub struct Delivery {
    pub mapping: Mapping,
    pending: VecDeque<Value>,
    attempts: u32,
    /// Where skipped batches are reported: the queue, the function's ARN, the stream's ARN.
    failures: Option<(crate::failures::FailureQueue, String, String)>,
}

/// What one delivery step did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Idle,
    Delivered {
        records: usize,
        failed_from: Option<usize>,
    },
    Skipped {
        records: usize,
        reason: String,
    },
}

impl Delivery {
    pub fn new(mapping: Mapping) -> Self {
        Self {
            mapping,
            pending: VecDeque::new(),
            attempts: 0,
            failures: None,
        }
    }

    /// Reports batches given up on to `queue`, as the mapping's on-failure destination does.
    pub fn with_failures(
        mut self,
        queue: crate::failures::FailureQueue,
        function_arn: &str,
        stream_arn: &str,
    ) -> Self {
        self.failures = Some((queue, function_arn.to_owned(), stream_arn.to_owned()));
        self
    }

    /// Adds newly read records (Lambda JSON shape), keeping only those the filters accept.
    pub fn offer(&mut self, records: Vec<Value>) {
        let filters = &self.mapping.filters;
        self.pending.extend(
            records
                .into_iter()
                .filter(|r| filters.is_empty() || filters.iter().any(|f| matches(f, r))),
        );
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Delivers the head batch once and advances according to the answer.
    pub async fn step(&mut self, handler: &Handler) -> Outcome {
        if self.pending.is_empty() {
            return Outcome::Idle;
        }
        let n = self.pending.len().min(self.mapping.batch_size.max(1));
        let batch: Vec<Value> = self.pending.iter().take(n).cloned().collect();
        let event: Event = match serde_json::from_value(json!({ "Records": batch })) {
            Ok(e) => e,
            Err(e) => {
                self.pending.drain(..n);
                return Outcome::Skipped {
                    records: n,
                    reason: format!("records do not parse as a DynamoDB event: {e}"),
                };
            }
        };
        let failed_from = match handler(event).await {
            Ok(response) if self.mapping.report_failures => batch.iter().position(|r| {
                let seq = r["dynamodb"]["SequenceNumber"].as_str().unwrap_or_default();
                response
                    .batch_item_failures
                    .iter()
                    .any(|f| f.item_identifier.as_deref() == Some(seq))
            }),
            Ok(_) => None,
            Err(_) => Some(0),
        };
        match failed_from {
            None => {
                self.pending.drain(..n);
                self.attempts = 0;
                Outcome::Delivered {
                    records: n,
                    failed_from: None,
                }
            }
            Some(i) => {
                // Records before the first failure are done; the rest are retried from there.
                self.pending.drain(..i);
                if i > 0 {
                    self.attempts = 0;
                }
                self.attempts += 1;
                if self
                    .mapping
                    .max_retries
                    .is_some_and(|max| self.attempts > max)
                {
                    let skipped = (n - i).min(self.pending.len());
                    let batch: Vec<Value> = self.pending.drain(..skipped).collect();
                    let attempts = std::mem::take(&mut self.attempts);
                    if let Some((queue, function, stream)) = &self.failures {
                        if let Err(e) = queue.report(function, stream, &batch, attempts).await {
                            tracing::error!(function, error = %e, "could not report a skipped batch to the on-failure queue");
                        }
                    }
                    return Outcome::Skipped {
                        records: skipped,
                        reason: "retries exhausted".into(),
                    };
                }
                Outcome::Delivered {
                    records: n,
                    failed_from: Some(i),
                }
            }
        }
    }
}

/// Polls the stream and delivers to `handler` until the task is dropped; one log line per batch.
/// A write made in this process through the local stack's SDK config wakes the poll at once
/// (`crate::writes`); otherwise it polls every `poll`.
pub async fn run(
    mut reader: StreamReader,
    mut delivery: Delivery,
    handler: Handler,
    poll: std::time::Duration,
) {
    let mut written = crate::writes::subscribe();
    loop {
        // Seen before reading: a write landing during this poll or the deliveries wakes the next.
        written.borrow_and_update();
        match reader.poll(1000).await {
            Ok(records) => delivery.offer(records),
            Err(e) => {
                tracing::warn!(function = %delivery.mapping.function, error = %e, "stream poll failed")
            }
        }
        loop {
            let started = std::time::Instant::now();
            let outcome = delivery.step(&handler).await;
            if outcome == Outcome::Idle {
                break;
            }
            tracing::info!(
                function = %delivery.mapping.function,
                trigger = "dynamodb-stream",
                ms = started.elapsed().as_millis() as u64,
                outcome = ?outcome,
                "invoke"
            );
            if matches!(
                outcome,
                Outcome::Delivered {
                    failed_from: Some(_),
                    ..
                }
            ) {
                // Back off a little before retrying, as the event-source mapping does.
                tokio::time::sleep(poll).await;
            }
        }
        tokio::select! {
            _ = written.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event_type: &str) -> Value {
        json!({"eventName": "INSERT", "dynamodb": {"NewImage": {"event_type": {"S": event_type}, "version": {"N": "3"}}}})
    }

    #[test]
    fn filter_patterns_match_like_lambda() {
        let p: Value = json!({"dynamodb": {"NewImage": {"event_type": {"S": ["StepScheduled"]}}}});
        assert!(matches(&p, &record("StepScheduled")));
        assert!(!matches(&p, &record("StepSucceeded")));
        let prefix = json!({"dynamodb": {"NewImage": {"event_type": {"S": [{"prefix": "Step"}]}}}});
        assert!(matches(&prefix, &record("StepSucceeded")));
        let but = json!({"eventName": [{"anything-but": ["REMOVE", "MODIFY"]}]});
        assert!(matches(&but, &record("x")));
        let exists = json!({"dynamodb": {"NewImage": {"missing": [{"exists": false}]}}});
        assert!(matches(&exists, &record("x")));
        let numeric =
            json!({"dynamodb": {"NewImage": {"version": {"N": [{"numeric": [">", 2, "<=", 3]}]}}}});
        assert!(matches(&numeric, &record("x")));
        // A nested leaf (the worker's match on an outcome carrying tasks).
        let nested = json!({"dynamodb": {"NewImage": {"payload": {"M": {"tasks": {"N": [{"exists": true}]}}}}}});
        assert!(!matches(&nested, &record("StepSucceeded")));
        let mut with_tasks = record("StepSucceeded");
        with_tasks["dynamodb"]["NewImage"]["payload"] = json!({"M": {"tasks": {"N": "2"}}});
        assert!(matches(&nested, &with_tasks));
        let without = json!({"dynamodb": {"NewImage": {"payload": {"M": {"tasks": {"N": [{"exists": false}]}}}}}});
        assert!(matches(&without, &record("StepSucceeded")));
        assert!(!matches(&without, &with_tasks));
        assert!(!matches(&json!({"eventName": ["REMOVE"]}), &record("x")));
    }

    #[test]
    fn workspace_template_has_no_unknown_mapping_shapes() {
        let t = Template::workspace("s").unwrap();
        for m in mappings(&t) {
            assert!(!m.table.is_empty(), "{m:?}");
            assert!(m.batch_size >= 1);
        }
    }
}
