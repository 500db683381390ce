//! The local event-source mapping against moto's stream: filters, batch size, partial batch
//! failures (resume at the first failed record), and a poisoned record skipped after its retries.

use std::sync::{Arc, Mutex};

use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde_json::json;
use shared::events::{
    decode_stream_record, AppendRequest, DynamoEventStore, EventStore, EventTables,
    ExpectedVersion, StreamId, Upcasters,
};
use wfe_local::esm::{Delivery, Handler, Mapping, Outcome};
use wfe_local::failures::FailureQueue;

use crate::support::Stack;

#[tokio::test]
async fn filters_batches_and_partial_failures_behave_like_lambda() {
    let stack = Stack::fresh("esm").await;
    let store = DynamoEventStore::new(
        stack.dynamodb.clone(),
        EventTables {
            events: stack.tables.events.clone(),
            state: stack.tables.state.clone(),
        },
        Upcasters::new(),
    );
    let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let stream = StreamId::new(&tenant, "execution", "e1").unwrap();
    // Versions 1..=9; even versions are "Wanted", odd ones "Other"; version 6 fails once and
    // version 8 always fails (poisoned).
    let events = (1..=9u64)
        .map(|n| {
            let mut e = shared::events::contract::event(&tenant, n);
            e.event_type = if n % 2 == 0 {
                "Wanted".into()
            } else {
                "Other".into()
            };
            e
        })
        .collect();
    store
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events,
            idempotency_key: None,
        })
        .await
        .unwrap();

    let deliveries: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let failed_once: Arc<Mutex<bool>> = Arc::default();
    let handler: Handler = {
        let (deliveries, failed_once) = (deliveries.clone(), failed_once.clone());
        Arc::new(move |event| {
            let (deliveries, failed_once) = (deliveries.clone(), failed_once.clone());
            Box::pin(async move {
                let mut versions = Vec::new();
                let mut failures = Vec::new();
                for r in &event.records {
                    let e = decode_stream_record(r, &Upcasters::new()).unwrap().unwrap();
                    versions.push(e.version);
                    let fail = e.version == 8
                        || (e.version == 6
                            && !std::mem::replace(&mut *failed_once.lock().unwrap(), true));
                    if fail && failures.is_empty() {
                        let mut f = DynamoDbBatchItemFailure::default();
                        f.item_identifier = r.change.sequence_number.clone();
                        failures.push(f);
                    }
                }
                deliveries.lock().unwrap().push(versions);
                let mut response = DynamoDbEventResponse::default();
                response.batch_item_failures = failures;
                Ok(response)
            })
        })
    };

    let mapping = Mapping {
        function: "TestFunction".into(),
        table: "EventsTable".into(),
        batch_size: 2,
        filters: vec![json!({"dynamodb": {"NewImage": {"event_type": {"S": ["Wanted"]}}}})],
        report_failures: true,
        max_retries: Some(2),
        on_failure: None,
    };
    let mut reader = stack.events_stream().await;
    let stream_arn = wfe_local::streams::stream_arn(&stack.dynamodb, &stack.tables.events)
        .await
        .unwrap();
    let queue_name = format!("esm-failures-{}", uuid::Uuid::new_v4().simple());
    let queue = FailureQueue::ensure(&stack.sdk, &queue_name).await.unwrap();
    let mut delivery = Delivery::new(mapping.clone()).with_failures(
        queue.clone(),
        "arn:aws:lambda:us-east-1:123456789012:function:test-fn",
        &stream_arn,
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while delivery.pending() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never delivered 4 Wanted records"
        );
        delivery.offer(reader.poll(100).await.unwrap());
    }
    assert_eq!(delivery.pending(), 4, "only Wanted records pass the filter");

    let mut outcomes = Vec::new();
    loop {
        let outcome = delivery.step(&handler).await;
        if outcome == Outcome::Idle {
            break;
        }
        outcomes.push(outcome);
    }
    let delivered = deliveries.lock().unwrap().clone();
    assert_eq!(
        delivered,
        vec![
            vec![2, 4],
            vec![6, 8], // 6 fails once: resume at 6
            vec![6, 8], // 8 fails: 6 is done, resume at 8
            vec![8],    // retry 1 of 8
            vec![8],    // retry 2 fails too: MaximumRetryAttempts = 2, so it is skipped
        ]
    );
    assert!(
        matches!(outcomes.last(), Some(Outcome::Skipped { records: 1, .. })),
        "{outcomes:?}"
    );

    // The skipped batch is in the on-failure queue, as Lambda describes it: the range, not the
    // records; replaying reads them back from the stream and delivers them again.
    let failures = queue.list().await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let info = &failures[0].record;
    assert_eq!(failures[0].function(), "test-fn");
    assert_eq!(
        info["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(info["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(info["DDBStreamBatchInfo"]["batchSize"], 1);
    assert_eq!(info["DDBStreamBatchInfo"]["streamArn"], stream_arn.as_str());
    let records = wfe_local::failures::records_of(&stack.sdk, &failures[0])
        .await
        .unwrap();
    let versions: Vec<u64> = wfe_local::streams::parse_records(records.clone())
        .unwrap()
        .iter()
        .map(|r| {
            decode_stream_record(r, &Upcasters::new())
                .unwrap()
                .unwrap()
                .version
        })
        .collect();
    assert_eq!(versions, [8], "exactly the skipped record");
    let replayed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let healed: Handler = {
        let replayed = replayed.clone();
        Arc::new(move |event| {
            let replayed = replayed.clone();
            Box::pin(async move {
                for r in &event.records {
                    let e = decode_stream_record(r, &Upcasters::new()).unwrap().unwrap();
                    replayed.lock().unwrap().push(e.version);
                }
                Ok(DynamoDbEventResponse::default())
            })
        })
    };
    let done = wfe_local::failures::replay(&queue, &failures[0], records, mapping, &healed)
        .await
        .unwrap();
    assert_eq!(done, 1);
    assert_eq!(*replayed.lock().unwrap(), [8]);
    assert!(
        queue.list().await.unwrap().is_empty(),
        "replayed, then removed"
    );
}
