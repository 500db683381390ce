//! The event-store contract against DynamoDB on moto, and stream records decoded back.

use std::sync::Arc;

use shared::event_store_contract;
use shared::events::{
    decode_stream_record, AppendRequest, DynamoEventStore, EventStore, EventTables,
    ExpectedVersion, StreamId, Upcasters,
};
use wfe_local::streams::parse_records;

use crate::support::Stack;

fn store(stack: &Stack, upcasters: Upcasters) -> DynamoEventStore {
    DynamoEventStore::new(
        stack.dynamodb.clone(),
        EventTables {
            events: stack.tables.events.clone(),
            state: stack.tables.state.clone(),
        },
        upcasters,
    )
}

async fn dynamo(upcasters: Upcasters) -> Arc<dyn EventStore> {
    Arc::new(store(&Stack::shared().await, upcasters))
}

event_store_contract!(dynamo);

#[tokio::test]
async fn stream_records_decode_into_the_appended_envelopes() {
    let stack = Stack::fresh("stream").await;
    let store = store(&stack, shared::events::contract::upcasters());
    let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let stream = StreamId::new(&tenant, "execution", "e1").unwrap();
    let events: Vec<_> = (1..=3)
        .map(|n| shared::events::contract::event(&tenant, n))
        .collect();
    store
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events,
            idempotency_key: Some("k".into()),
        })
        .await
        .unwrap();
    let appended = store.read_from(&stream, 1).await.unwrap();

    let mut reader = stack.events_stream().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut decoded = Vec::new();
    while decoded.len() < appended.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream delivered {decoded:?} only"
        );
        let records = parse_records(reader.poll(100).await.unwrap()).unwrap();
        for record in &records {
            assert_eq!(
                record.change.keys.len(),
                2,
                "keys are stream_id and version"
            );
            if let Some(envelope) = decode_stream_record(record, &Upcasters::new()).unwrap() {
                decoded.push(envelope);
            }
        }
    }
    assert_eq!(
        decoded, appended,
        "stream records decode into exactly what was appended"
    );
}
