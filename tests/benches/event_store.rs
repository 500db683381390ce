//! Event-store throughput, both adapters: appends of 1 and 100 events, and reading a 1,000-event
//! stream back. The DynamoDB adapter runs against the local stack (moto): its numbers measure
//! moto plus the adapter, not AWS. Run with `scripts/bench event_store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shared::events::contract::{event, upcasters};
use shared::events::decode_stream_record;
use shared::events::{
    AppendRequest, DynamoEventStore, EventStore, EventTables, ExpectedVersion, InMemoryEventStore,
    StreamId,
};
use tokio::runtime::Runtime;
use wfe_local::endpoint::{create_tables, sdk_config};
use wfe_local::streams::{parse_records, stream_arn, StreamReader};
use wfe_local::template::Template;

static STREAM: AtomicU64 = AtomicU64::new(0);

fn fresh_stream(tenant: &str) -> StreamId {
    StreamId::new(
        tenant,
        "bench",
        &STREAM.fetch_add(1, Ordering::Relaxed).to_string(),
    )
    .unwrap()
}

fn append_request(tenant: &str, events: u64) -> AppendRequest {
    AppendRequest {
        stream_id: fresh_stream(tenant),
        expected: ExpectedVersion::NoStream,
        events: (1..=events).map(|n| event(tenant, n)).collect(),
        idempotency_key: None,
    }
}

async fn dynamo() -> Arc<dyn EventStore> {
    let stack = format!("bench-{}", std::process::id());
    let template = Template::workspace(&stack).unwrap();
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    create_tables(&client, &template).await.unwrap();
    let tables = template.tables().unwrap();
    Arc::new(DynamoEventStore::new(
        client,
        EventTables {
            events: tables.events,
            state: tables.state,
        },
        upcasters(),
    ))
}

async fn thousand_event_stream(store: &Arc<dyn EventStore>, tenant: &str) -> StreamId {
    let stream = fresh_stream(tenant);
    for batch in 0..10u64 {
        let expected = match batch {
            0 => ExpectedVersion::NoStream,
            _ => ExpectedVersion::Exact(batch * 100),
        };
        let events = (1..=100)
            .map(|n| event(tenant, batch * 100 + n))
            .collect::<Vec<_>>();
        // Batches after the first need a version check too: 99 + 1 and then the last one alone.
        let (head, tail) = events.split_at(if batch == 0 { 100 } else { 99 });
        store
            .append(AppendRequest {
                stream_id: stream.clone(),
                expected,
                events: head.to_vec(),
                idempotency_key: None,
            })
            .await
            .unwrap();
        if !tail.is_empty() {
            store
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected: ExpectedVersion::Exact(batch * 100 + 99),
                    events: tail.to_vec(),
                    idempotency_key: None,
                })
                .await
                .unwrap();
        }
    }
    stream
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let tenant = format!("bench{}", std::process::id());
    let stores: Vec<(&str, Arc<dyn EventStore>)> = vec![
        ("memory", Arc::new(InMemoryEventStore::new(upcasters()))),
        ("dynamodb", rt.block_on(dynamo())),
    ];

    let mut append = c.benchmark_group("append");
    append.sample_size(20);
    for (name, store) in &stores {
        for events in [1u64, 100] {
            append.throughput(Throughput::Elements(events));
            append.bench_with_input(BenchmarkId::new(*name, events), &events, |b, &events| {
                b.to_async(&rt).iter_batched(
                    || append_request(&tenant, events),
                    |req| {
                        let store = store.clone();
                        async move { store.append(req).await.unwrap() }
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    append.finish();

    let mut read = c.benchmark_group("read");
    read.sample_size(20);
    read.throughput(Throughput::Elements(1000));
    for (name, store) in &stores {
        let stream = rt.block_on(thousand_event_stream(store, &tenant));
        read.bench_function(BenchmarkId::new(*name, 1000), |b| {
            b.to_async(&rt).iter(|| {
                let (store, stream) = (store.clone(), stream.clone());
                async move {
                    let events = store.read_from(&stream, 1).await.unwrap();
                    assert_eq!(events.len(), 1000);
                }
            })
        });
    }
    read.finish();

    // The adapter's own share of a stream consumer's work, without moto: decoding 1,000 DynamoDB
    // stream records (Lambda's JSON shape) into envelopes.
    let records = rt.block_on(stream_records(&tenant));
    let mut decode = c.benchmark_group("decode_stream_records");
    decode.throughput(Throughput::Elements(records.len() as u64));
    decode.bench_function("1000", |b| {
        let none = shared::events::Upcasters::new();
        b.iter(|| {
            for r in &records {
                decode_stream_record(r, &none).unwrap().unwrap();
            }
        })
    });
    decode.finish();
}

/// 1,000 appended events as the Lambda event-source mapping would deliver them, read from moto's
/// stream once (not timed).
async fn stream_records(tenant: &str) -> Vec<aws_lambda_events::dynamodb::EventRecord> {
    let stack = format!("bench-decode-{}", std::process::id());
    let template = Template::workspace(&stack).unwrap();
    let sdk = sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    create_tables(&client, &template).await.unwrap();
    let tables = template.tables().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(DynamoEventStore::new(
        client.clone(),
        EventTables {
            events: tables.events.clone(),
            state: tables.state,
        },
        upcasters(),
    ));
    thousand_event_stream(&store, tenant).await;
    let arn = stream_arn(&client, &tables.events).await.unwrap();
    let mut reader = StreamReader::from_start(aws_sdk_dynamodbstreams::Client::new(&sdk), &arn)
        .await
        .unwrap();
    let mut records = Vec::new();
    while records.len() < 1000 {
        records.extend(parse_records(reader.poll(1000).await.unwrap()).unwrap());
    }
    records
}

criterion_group!(benches, bench);
criterion_main!(benches);
