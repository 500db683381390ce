//! The stream mappings' on-failure destination, run locally. When the event-source mapping gives
//! up on a batch (retries exhausted), Lambda sends an invocation record to the SQS queue named in
//! `DestinationConfig.OnFailure`: the batch's shard and sequence range, not the records. The local
//! mapping does the same on moto's SQS, and `wfe-local failures list|replay` shows those records
//! and delivers the batches again from the stream.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use serde_json::{json, Value};

fn err(e: impl std::error::Error) -> String {
    DisplayErrorContext(e).to_string()
}

/// One failure queue (created if missing, as the stack's deploy would).
#[derive(Clone)]
pub struct FailureQueue {
    client: aws_sdk_sqs::Client,
    pub url: String,
}

/// A batch the mapping gave up on, as its invocation record says.
#[derive(Debug, Clone)]
pub struct Failure {
    pub receipt: String,
    pub record: Value,
}

impl Failure {
    /// The function whose mapping gave up (the last part of its ARN).
    pub fn function(&self) -> &str {
        self.record["requestContext"]["functionArn"]
            .as_str()
            .and_then(|arn| arn.rsplit(':').next())
            .unwrap_or_default()
    }

    fn batch(&self) -> &Value {
        &self.record["DDBStreamBatchInfo"]
    }
}

impl FailureQueue {
    pub async fn ensure(sdk: &SdkConfig, name: &str) -> Result<Self, String> {
        let client = aws_sdk_sqs::Client::new(sdk);
        let out = client
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(err)?;
        Ok(Self {
            url: out.queue_url.ok_or("CreateQueue returned no URL")?,
            client,
        })
    }

    /// Records a batch that was given up on, in Lambda's invocation-record shape.
    pub async fn report(
        &self,
        function_arn: &str,
        stream_arn: &str,
        skipped: &[Value],
        attempts: u32,
    ) -> Result<(), String> {
        let sequence = |r: Option<&Value>| {
            r.and_then(|r| r["dynamodb"]["SequenceNumber"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let arrival = |r: Option<&Value>| {
            r.and_then(|r| r["dynamodb"]["ApproximateCreationDateTime"].as_f64())
                .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                .map(|t| t.to_rfc3339())
        };
        let record = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "DDBStreamBatchInfo": {
                "shardId": null,
                "startSequenceNumber": sequence(skipped.first()),
                "endSequenceNumber": sequence(skipped.last()),
                "approximateArrivalOfFirstRecord": arrival(skipped.first()),
                "approximateArrivalOfLastRecord": arrival(skipped.last()),
                "batchSize": skipped.len(),
                "streamArn": stream_arn,
            }
        });
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(record.to_string())
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Every record in the queue, without taking them (each stays visible).
    pub async fn list(&self) -> Result<Vec<Failure>, String> {
        let mut seen = std::collections::BTreeMap::new();
        // SQS returns a sample per call; a few calls with no visibility timeout see them all.
        for _ in 0..10 {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(err)?;
            let messages = out.messages.unwrap_or_default();
            let before = seen.len();
            for m in messages {
                let id = m.message_id.clone().unwrap_or_default();
                let record =
                    serde_json::from_str(m.body().unwrap_or("null")).unwrap_or(Value::Null);
                seen.entry(id).or_insert(Failure {
                    receipt: m.receipt_handle.unwrap_or_default(),
                    record,
                });
            }
            if seen.len() == before {
                break;
            }
        }
        Ok(seen.into_values().collect())
    }

    pub async fn remove(&self, failure: &Failure) -> Result<(), String> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&failure.receipt)
            .send()
            .await
            .map_err(err)?;
        Ok(())
    }
}

/// Sequence numbers are decimal strings of any length: compare them as numbers.
fn seq_key(s: &str) -> (usize, &str) {
    let s = s.trim_start_matches('0');
    (s.len(), s)
}

/// The records of the failed batch, read again from the stream (Lambda-shaped).
pub async fn records_of(sdk: &SdkConfig, failure: &Failure) -> Result<Vec<Value>, String> {
    let batch = failure.batch();
    let arn = batch["streamArn"].as_str().ok_or("no streamArn")?;
    let start = batch["startSequenceNumber"].as_str().ok_or("no start")?;
    let end = batch["endSequenceNumber"].as_str().ok_or("no end")?;
    let client = aws_sdk_dynamodbstreams::Client::new(sdk);
    let shards = client
        .describe_stream()
        .stream_arn(arn)
        .send()
        .await
        .map_err(err)?
        .stream_description
        .map(|d| d.shards.unwrap_or_default())
        .unwrap_or_default();
    let mut out = Vec::new();
    for shard in shards {
        let Some(id) = shard.shard_id() else { continue };
        // The start is in one shard only; the others refuse the iterator.
        let Ok(it) = client
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(id)
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(start)
            .send()
            .await
        else {
            continue;
        };
        let mut iterator = it.shard_iterator;
        while let Some(it) = iterator {
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(1000)
                .send()
                .await
                .map_err(err)?;
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            for r in &records {
                let record = crate::streams::lambda_record(r, arn);
                let seq = record["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .unwrap_or_default();
                if seq_key(seq) > seq_key(end) {
                    return Ok(out);
                }
                out.push(record);
            }
            iterator = page.next_shard_iterator;
        }
    }
    Ok(out)
}

/// Delivers a failed batch's records again through the mapping's filters and batching (no
/// further retries: a batch that fails again stays in the queue), then removes the failure.
/// Returns how many records were delivered.
pub async fn replay(
    queue: &FailureQueue,
    failure: &Failure,
    records: Vec<Value>,
    mut mapping: crate::esm::Mapping,
    handler: &crate::esm::Handler,
) -> Result<usize, String> {
    use crate::esm::{Delivery, Outcome};
    mapping.max_retries = Some(0);
    let mut delivery = Delivery::new(mapping);
    delivery.offer(records);
    let mut delivered = 0;
    loop {
        match delivery.step(handler).await {
            Outcome::Idle => break,
            Outcome::Delivered {
                records,
                failed_from: None,
            } => delivered += records,
            Outcome::Delivered { .. } => {}
            Outcome::Skipped { reason, .. } => {
                return Err(format!(
                    "the batch failed again ({reason}); it stays in the queue"
                ))
            }
        }
    }
    queue.remove(failure).await?;
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sequence_numbers_compare_as_numbers() {
        use super::seq_key;
        assert!(seq_key("900") < seq_key("1000"));
        assert!(seq_key("000120") == seq_key("120"));
        assert!(seq_key("121") > seq_key("00120"));
    }
}
