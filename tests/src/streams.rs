//! DynamoDB Streams to Lambda: reads a table's stream on moto and turns each record into the JSON
//! the Lambda event-source mapping delivers (`{"Records": [...]}`), parsed with the same
//! aws_lambda_events types the stream functions use.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::{json, Value as Json};

/// The stream ARN of a table (the one that `StreamSpecification` enabled).
pub async fn stream_arn(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<String, String> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    out.table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .ok_or_else(|| format!("table {table} has no stream"))
}

/// Follows every shard of one stream from where it last stopped.
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// (shard id, next iterator) per open shard.
    iterators: Vec<(String, Option<String>)>,
}

impl StreamReader {
    /// Starts at the beginning of the stream (TRIM_HORIZON).
    pub async fn from_start(
        client: aws_sdk_dynamodbstreams::Client,
        arn: &str,
    ) -> Result<Self, String> {
        let err = |e: &dyn std::error::Error| DisplayErrorContext(e).to_string();
        let desc = client
            .describe_stream()
            .stream_arn(arn)
            .send()
            .await
            .map_err(|e| err(&e))?;
        let shards = desc
            .stream_description()
            .map(|d| d.shards().to_vec())
            .unwrap_or_default();
        let mut iterators = Vec::new();
        for shard in shards {
            let id = shard.shard_id().unwrap_or_default().to_owned();
            let it = client
                .get_shard_iterator()
                .stream_arn(arn)
                .shard_id(&id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(|e| err(&e))?;
            iterators.push((id, it.shard_iterator));
        }
        Ok(Self {
            client,
            arn: arn.to_owned(),
            iterators,
        })
    }

    /// One GetRecords per open shard; records in shard order, as Lambda-shaped JSON.
    pub async fn poll(&mut self, limit: i32) -> Result<Vec<Json>, String> {
        let mut out = Vec::new();
        for (_, iterator) in &mut self.iterators {
            let Some(it) = iterator.clone() else { continue };
            let page = self
                .client
                .get_records()
                .shard_iterator(it)
                .limit(limit)
                .send()
                .await
                .map_err(|e| DisplayErrorContext(&e).to_string())?;
            *iterator = page.next_shard_iterator;
            out.extend(
                page.records
                    .unwrap_or_default()
                    .iter()
                    .map(|r| lambda_record(r, &self.arn)),
            );
        }
        Ok(out)
    }
}

fn image(
    map: Option<&std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>,
) -> Json {
    map.map(|m| serde_json::to_value(serde_dynamo::Item::from(m.clone())).unwrap_or(Json::Null))
        .unwrap_or_else(|| json!({}))
}

/// One stream record in the shape Lambda's DynamoDB event source delivers.
pub fn lambda_record(record: &Record, stream_arn: &str) -> Json {
    let change = record.dynamodb();
    let mut dynamodb = json!({
        "Keys": image(change.and_then(|c| c.keys.as_ref())),
        "SequenceNumber": change.and_then(|c| c.sequence_number()),
        "SizeBytes": change.and_then(|c| c.size_bytes()).unwrap_or_default(),
        "StreamViewType": change.and_then(|c| c.stream_view_type()).map(|v| v.as_str()),
        "ApproximateCreationDateTime": change
            .and_then(|c| c.approximate_creation_date_time())
            .map(|t| t.secs() as f64)
            .unwrap_or_default(),
    });
    if let Some(new) = change.and_then(|c| c.new_image.as_ref()) {
        dynamodb["NewImage"] = image(Some(new));
    }
    if let Some(old) = change.and_then(|c| c.old_image.as_ref()) {
        dynamodb["OldImage"] = image(Some(old));
    }
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventVersion": record.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region().unwrap_or("us-east-1"),
        "eventSourceARN": stream_arn,
        "dynamodb": dynamodb,
    })
}

/// Parses Lambda-shaped records with the types the functions use.
pub fn parse_records(records: Vec<Json>) -> Result<Vec<EventRecord>, String> {
    let event: Event =
        serde_json::from_value(json!({ "Records": records })).map_err(|e| e.to_string())?;
    Ok(event.records)
}
