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

/// A snapshot split over several items whose parts are gone (expired, or a torn write) reads as
/// no snapshot, so the execution is replayed from its events, and a replaced snapshot leaves no
/// parts behind.
#[tokio::test]
async fn a_snapshot_with_missing_parts_reads_as_none_and_replaced_parts_are_removed() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use shared::events::Snapshot;
    use std::collections::HashMap;
    let stack = Stack::shared().await;
    let store = store(&stack, Upcasters::new());
    let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let stream = StreamId::new(&tenant, "execution", "big").unwrap();
    let snap = |version: u64, kb: usize| Snapshot {
        stream_id: stream.clone(),
        version,
        schema_version: 1,
        state: serde_json::json!({ "blob": "y".repeat(kb * 1024) })
            .as_object()
            .cloned()
            .unwrap(),
    };
    let part = |version: u64, i: u64| {
        HashMap::from([
            (
                "pk".to_owned(),
                AttributeValue::S(format!("SNAPPART#{stream}#{version:020}#{i:04}")),
            ),
            ("sk".to_owned(), AttributeValue::S("PART".into())),
        ])
    };
    let exists = async |version: u64, i: u64| {
        stack
            .dynamodb
            .get_item()
            .table_name(&stack.tables.state)
            .set_key(Some(part(version, i)))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .is_some()
    };

    store.save_snapshot(snap(100, 800)).await.unwrap();
    for i in 0..3 {
        assert!(exists(100, i).await, "800 KB in parts of 350 KB: part {i}");
    }
    store.save_snapshot(snap(200, 500)).await.unwrap();
    for i in 0..3 {
        assert!(
            !exists(100, i).await,
            "the replaced head's part {i} is deleted"
        );
    }
    assert!(exists(200, 0).await && exists(200, 1).await && !exists(200, 2).await);
    assert_eq!(
        store.load_snapshot(&stream).await.unwrap(),
        Some(snap(200, 500))
    );

    stack
        .dynamodb
        .delete_item()
        .table_name(&stack.tables.state)
        .set_key(Some(part(200, 1)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.load_snapshot(&stream).await.unwrap(),
        None,
        "a torn snapshot is no snapshot"
    );
}

/// Forwards to moto, but answers the first `PutItem` on `table` with a 500 after moto has
/// applied it: the write happened and its answer was lost, as a network or a DynamoDB front end
/// can lose it. The SDK retries the same request.
async fn losing_first_put_answer(table: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let lost = Arc::new(AtomicUsize::new(0));
    let puts = lost.clone();
    let upstream = wfe_local::endpoint::endpoint_url();
    let client = reqwest::Client::new();
    let forward = move |headers: HeaderMap, body: Bytes| {
        let (client, upstream, puts, table) = (
            client.clone(),
            upstream.clone(),
            puts.clone(),
            table.clone(),
        );
        async move {
            let mut req = client.post(&upstream);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let answer = req.body(body.clone()).send().await.unwrap();
            let status = answer.status();
            let bytes = answer.bytes().await.unwrap();
            let is_put = headers
                .get("x-amz-target")
                .is_some_and(|t| t == "DynamoDB_20120810.PutItem");
            let on_table = String::from_utf8_lossy(&body).contains(&format!("\"{table}\""));
            if is_put && on_table && puts.fetch_add(1, Ordering::SeqCst) == 0 {
                let lost = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"answer lost"}"#;
                return (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(lost));
            }
            (StatusCode::from_u16(status.as_u16()).unwrap(), bytes)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(forward))
            .await
            .unwrap()
    });
    (url, lost)
}

#[tokio::test]
async fn a_single_event_whose_answer_was_lost_is_appended_once_and_reported_as_done() {
    let stack = Stack::shared().await;
    let (url, puts) = losing_first_put_answer(stack.tables.events.clone()).await;
    let sdk = wfe_local::endpoint::sdk_config_for(&url).await;
    let store = DynamoEventStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        EventTables {
            events: stack.tables.events.clone(),
            state: stack.tables.state.clone(),
        },
        Upcasters::default(),
    );
    let tenant = format!("t{}", uuid::Uuid::new_v4().simple());
    let stream = StreamId::new(&tenant, "execution", "lost-answer").unwrap();
    let event = shared::events::contract::event(&tenant, 1);
    let id = event.event_id.clone();
    let r = store
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            idempotency_key: None,
        })
        .await
        .expect("the SDK's retry finds the event it wrote and the append succeeds");
    assert_eq!((r.first_version, r.last_version), (1, 1));
    // The first put was applied and its answer lost; the retry met its own event.
    assert_eq!(puts.load(std::sync::atomic::Ordering::SeqCst), 2);
    let stored = store.read_from(&stream, 1).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].event_id, id);
}
