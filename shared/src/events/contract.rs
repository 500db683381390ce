//! The event-store contract: one suite every adapter must pass. `event_store_contract!(factory)`
//! expands to one test per case; `factory(upcasters)` returns a fresh `Arc<dyn EventStore>`.
//! Every case works under its own random tenant, so cases can share one backend.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use futures::future::join_all;
use serde_json::{json, Map, Value};

use super::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Snapshot, StoreError, StreamId,
    Upcasters,
};

/// Expands to one `#[tokio::test]` per contract case for the adapter built by `$factory`.
#[macro_export]
macro_rules! event_store_contract {
    ($factory:path) => {
        $crate::event_store_contract!(@cases $factory;
            append_then_read_back, no_stream_on_existing_stream_conflicts,
            exact_version_mismatch_conflicts, any_appends_at_the_end,
            concurrent_appends_exactly_one_wins, idempotent_retry_returns_first_result,
            idempotency_key_reused_for_other_request_conflicts, thousand_events_read_across_pages,
            read_from_any_version, snapshots_keep_the_newest, snapshots_larger_than_an_item,
            upcasters_apply_on_read,
            tenant_mismatch_is_rejected, too_many_events_are_rejected, empty_append_is_rejected,
            streams_and_tenants_are_isolated, oversized_event_is_rejected,
            a_key_is_claimed_once, claims_and_idempotent_appends_share_keys);
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $factory($crate::events::contract::upcasters()).await;
                $crate::events::contract::$case(store).await;
            }
        )*
    };
}

pub type Store = Arc<dyn EventStore>;

/// The upcasters every adapter under contract is built with: `contract.Renamed` v1 `{name}` becomes
/// v2 `{title}`, and v2 becomes v3 by adding `source`.
pub fn upcasters() -> Upcasters {
    Upcasters::new()
        .register("contract.Renamed", 1, |mut p| {
            let name = p.remove("name").ok_or("v1 has no name")?;
            p.insert("title".into(), name);
            Ok(p)
        })
        .register("contract.Renamed", 2, |mut p| {
            p.insert("source".into(), json!("upcast"));
            Ok(p)
        })
}

fn tenant() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

fn stream(tenant: &str, id: &str) -> StreamId {
    StreamId::new(tenant, "contract", id).expect("valid stream id")
}

/// A deterministic event: same `n`, same content (event ids stay unique).
pub fn event(tenant: &str, n: u64) -> NewEvent {
    let mut payload = Map::new();
    payload.insert("n".into(), json!(n));
    payload.insert("text".into(), json!(format!("event {n}")));
    payload.insert("ratio".into(), json!(n as f64 / 4.0));
    payload.insert("tags".into(), json!(["a", "b"]));
    payload.insert(
        "nested".into(),
        json!({"ok": true, "none": null, "empty": {}}),
    );
    NewEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: "contract.Happened".into(),
        schema_version: 1,
        payload,
        metadata: Metadata {
            tenant: tenant.to_owned(),
            actor: Some("user-1".into()),
            correlation_id: "corr-1".into(),
            causation_id: (n > 1).then(|| format!("cause-{n}")),
            occurred_at: Utc
                .timestamp_opt(1_764_000_000 + n as i64, 123_456_789)
                .single()
                .expect("valid time"),
        },
    }
}

fn events(tenant: &str, range: std::ops::RangeInclusive<u64>) -> Vec<NewEvent> {
    range.map(|n| event(tenant, n)).collect()
}

fn request(stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream_id: stream.clone(),
        expected,
        events,
        idempotency_key: None,
    }
}

async fn versions(store: &Store, s: &StreamId) -> Vec<u64> {
    let all = store.read_from(s, 1).await.expect("read");
    all.iter().map(|e| e.version).collect()
}

pub async fn append_then_read_back(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let appended = events(&t, 1..=3);
    let r = store
        .append(request(&s, ExpectedVersion::NoStream, appended.clone()))
        .await
        .expect("append");
    assert_eq!((r.first_version, r.last_version, r.replayed), (1, 3, false));
    let read = store.read_from(&s, 1).await.expect("read");
    assert_eq!(read.len(), 3);
    for (i, (got, sent)) in read.iter().zip(&appended).enumerate() {
        assert_eq!(got.version, i as u64 + 1);
        assert_eq!(got.stream_id, s);
        assert_eq!(got.event_id, sent.event_id);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.payload, sent.payload, "payload round-trips exactly");
        assert_eq!(got.metadata, sent.metadata, "metadata round-trips exactly");
    }
    assert_eq!(store.last_version(&s).await.expect("head"), 3);
    let r = store
        .append(request(&s, ExpectedVersion::Exact(3), events(&t, 4..=4)))
        .await
        .expect("append at 3");
    assert_eq!((r.first_version, r.last_version), (4, 4));
}

pub async fn no_stream_on_existing_stream_conflicts(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 1..=2)))
        .await
        .expect("first");
    let err = store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 3..=3)))
        .await
        .expect_err("second NoStream must conflict");
    assert!(
        matches!(err, StoreError::Conflict { actual: 2, .. }),
        "{err:?}"
    );
    assert_eq!(versions(&store, &s).await, vec![1, 2]);
}

pub async fn exact_version_mismatch_conflicts(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 1..=3)))
        .await
        .expect("first");
    for stale in [1, 2] {
        let err = store
            .append(request(
                &s,
                ExpectedVersion::Exact(stale),
                events(&t, 9..=9),
            ))
            .await
            .expect_err("behind the head must conflict");
        assert!(
            matches!(err, StoreError::Conflict { actual: 3, .. }),
            "{err:?}"
        );
    }
    // Ahead of the head: appending would leave a gap.
    let err = store
        .append(request(&s, ExpectedVersion::Exact(5), events(&t, 9..=9)))
        .await
        .expect_err("ahead of the head must conflict");
    assert!(
        matches!(err, StoreError::Conflict { actual: 3, .. }),
        "{err:?}"
    );
    let err = store
        .append(request(
            &stream(&t, "missing"),
            ExpectedVersion::Exact(1),
            events(&t, 1..=1),
        ))
        .await
        .expect_err("a missing stream is not at version 1");
    assert!(
        matches!(err, StoreError::Conflict { actual: 0, .. }),
        "{err:?}"
    );
    assert_eq!(versions(&store, &s).await, vec![1, 2, 3]);
}

pub async fn any_appends_at_the_end(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let r = store
        .append(request(&s, ExpectedVersion::Any, events(&t, 1..=2)))
        .await
        .expect("any on empty");
    assert_eq!((r.first_version, r.last_version), (1, 2));
    let r = store
        .append(request(&s, ExpectedVersion::Any, events(&t, 3..=3)))
        .await
        .expect("any on existing");
    assert_eq!((r.first_version, r.last_version), (3, 3));
}

pub async fn concurrent_appends_exactly_one_wins(store: Store) {
    const WRITERS: usize = 8;
    let t = tenant();
    let s = stream(&t, "a");
    store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 1..=1)))
        .await
        .expect("seed");
    let attempts = (0..WRITERS).map(|w| {
        let store = store.clone();
        let req = request(
            &s,
            ExpectedVersion::Exact(1),
            events(&t, 10 * (w as u64 + 1)..=10 * (w as u64 + 1) + 1),
        );
        tokio::spawn(async move { store.append(req).await })
    });
    let results: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict { .. })))
        .count();
    assert_eq!(won, 1, "exactly one writer wins: {results:?}");
    assert_eq!(conflicts, WRITERS - 1, "all others conflict: {results:?}");
    assert_eq!(versions(&store, &s).await, vec![1, 2, 3]);
}

pub async fn idempotent_retry_returns_first_result(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 1..=2)))
        .await
        .expect("seed");
    let mut first = request(&s, ExpectedVersion::Exact(2), events(&t, 3..=4));
    first.idempotency_key = Some("key-1".into());
    let r1 = store.append(first.clone()).await.expect("first");
    assert_eq!(
        (r1.first_version, r1.last_version, r1.replayed),
        (3, 4, false)
    );
    // A client retry: same content, fresh event ids and timestamps.
    let mut retry = request(&s, ExpectedVersion::Exact(2), events(&t, 3..=4));
    retry.idempotency_key = Some("key-1".into());
    for e in &mut retry.events {
        e.metadata.occurred_at += chrono::Duration::seconds(30);
    }
    let r2 = store.append(retry).await.expect("retry");
    assert_eq!(
        (r2.first_version, r2.last_version, r2.replayed),
        (3, 4, true)
    );
    let concurrent = join_all((0..4).map(|_| {
        let store = store.clone();
        let req = first.clone();
        tokio::spawn(async move { store.append(req).await })
    }))
    .await;
    for r in concurrent {
        let r = r.expect("task").expect("replay");
        assert_eq!((r.first_version, r.last_version, r.replayed), (3, 4, true));
    }
    let read = store.read_from(&s, 1).await.expect("read");
    assert_eq!(read.len(), 4, "retries wrote nothing");
    assert_eq!(read[2].event_id, first.events[0].event_id);
}

pub async fn idempotency_key_reused_for_other_request_conflicts(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let mut first = request(&s, ExpectedVersion::NoStream, events(&t, 1..=1));
    first.idempotency_key = Some("key-1".into());
    store.append(first).await.expect("first");
    let mut other = request(&s, ExpectedVersion::Exact(1), events(&t, 7..=7));
    other.idempotency_key = Some("key-1".into());
    let err = store.append(other).await.expect_err("must conflict");
    assert!(
        matches!(&err, StoreError::IdempotencyConflict { key, .. } if key == "key-1"),
        "{err:?}"
    );
    assert_eq!(versions(&store, &s).await, vec![1]);
}

pub async fn thousand_events_read_across_pages(store: Store) {
    let t = tenant();
    let s = stream(&t, "long");
    for batch in 0..10u64 {
        let from = batch * 100 + 1;
        let expected = if batch == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(batch * 100)
        };
        // 100 events in the first append, then 99 and a single-event append (a conditional put)
        // per hundred.
        let last = if batch == 0 { from + 99 } else { from + 98 };
        let r = store
            .append(request(&s, expected, events(&t, from..=last)))
            .await
            .expect("batch append");
        assert_eq!(r.first_version, from);
        if batch > 0 {
            store
                .append(request(
                    &s,
                    ExpectedVersion::Exact(last),
                    events(&t, last + 1..=last + 1),
                ))
                .await
                .expect("fill");
        }
    }
    let all = store.read_from(&s, 1).await.expect("read");
    assert_eq!(all.len(), 1000);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == i as u64 + 1));
    // Small pages, followed by hand: every page boundary is crossed.
    let mut seen = 0;
    let mut cursor = Some(1);
    let mut pages = 0;
    while let Some(from) = cursor {
        let page = store.read_page(&s, from, 77).await.expect("page");
        if page.events.is_empty() {
            break;
        }
        assert!(page.events.len() <= 77);
        assert_eq!(page.events[0].version, seen + 1);
        seen += page.events.len() as u64;
        cursor = page.next;
        pages += 1;
    }
    assert_eq!(seen, 1000);
    assert_eq!(pages, 13);
}

pub async fn read_from_any_version(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 1..=10)))
        .await
        .expect("append");
    let tail = store.read_from(&s, 7).await.expect("read");
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
    assert!(store.read_from(&s, 11).await.expect("read").is_empty());
    let page = store.read_page(&s, 4, 3).await.expect("page");
    assert_eq!(
        page.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert_eq!(page.next, Some(7));
    assert!(store
        .read_from(&stream(&t, "none"), 1)
        .await
        .expect("read")
        .is_empty());
}

pub async fn snapshots_keep_the_newest(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    assert_eq!(store.load_snapshot(&s).await.expect("load"), None);
    let snap = |version: u64| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version: 1,
        state: json!({"count": version, "items": ["x"], "deep": {"a": 1.5}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    store.save_snapshot(snap(5)).await.expect("save 5");
    assert_eq!(store.load_snapshot(&s).await.expect("load"), Some(snap(5)));
    store
        .save_snapshot(snap(3))
        .await
        .expect("older is ignored");
    assert_eq!(store.load_snapshot(&s).await.expect("load"), Some(snap(5)));
    store.save_snapshot(snap(8)).await.expect("save 8");
    assert_eq!(store.load_snapshot(&s).await.expect("load"), Some(snap(8)));
    assert_eq!(
        store
            .load_snapshot(&stream(&tenant(), "a"))
            .await
            .expect("load"),
        None,
        "another tenant's stream of the same name has no snapshot"
    );
}

/// A state larger than one DynamoDB item (400 KB) still snapshots and loads back whole, and a
/// smaller or larger one replaces it.
pub async fn snapshots_larger_than_an_item(store: Store) {
    let t = tenant();
    let s = stream(&t, "big");
    let snap = |version: u64, kb: usize| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version: 1,
        state: json!({
            "version": version,
            // Multi-byte characters, so a part boundary falls inside one.
            "outputs": (0..kb).map(|i| format!("{i:04}-é{}", "x".repeat(1000))).collect::<Vec<_>>(),
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    };
    store
        .save_snapshot(snap(100, 1500))
        .await
        .expect("save 1.5 MB");
    assert_eq!(
        store.load_snapshot(&s).await.expect("load"),
        Some(snap(100, 1500))
    );
    store.save_snapshot(snap(200, 2)).await.expect("save small");
    assert_eq!(
        store.load_snapshot(&s).await.expect("load"),
        Some(snap(200, 2))
    );
    store
        .save_snapshot(snap(300, 900))
        .await
        .expect("save 900 KB");
    store
        .save_snapshot(snap(250, 700))
        .await
        .expect("older is ignored");
    assert_eq!(
        store.load_snapshot(&s).await.expect("load"),
        Some(snap(300, 900))
    );
}

pub async fn upcasters_apply_on_read(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let mut old = event(&t, 1);
    old.event_type = "contract.Renamed".into();
    old.payload = json!({"name": "first"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut current = event(&t, 2);
    current.event_type = "contract.Renamed".into();
    current.schema_version = 3;
    current.payload = json!({"title": "second", "source": "native"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    store
        .append(request(&s, ExpectedVersion::NoStream, vec![old, current]))
        .await
        .expect("append");
    let read = store.read_from(&s, 1).await.expect("read");
    assert_eq!(read[0].schema_version, 3);
    assert_eq!(
        Value::Object(read[0].payload.clone()),
        json!({"title": "first", "source": "upcast"})
    );
    assert_eq!(read[1].schema_version, 3);
    assert_eq!(
        Value::Object(read[1].payload.clone()),
        json!({"title": "second", "source": "native"})
    );
}

pub async fn tenant_mismatch_is_rejected(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let err = store
        .append(request(
            &s,
            ExpectedVersion::NoStream,
            events(&tenant(), 1..=1),
        ))
        .await
        .expect_err("foreign tenant");
    assert!(matches!(err, StoreError::TenantMismatch { .. }), "{err:?}");
    assert_eq!(store.last_version(&s).await.expect("head"), 0);
}

pub async fn too_many_events_are_rejected(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let err = store
        .append(request(&s, ExpectedVersion::NoStream, events(&t, 1..=101)))
        .await
        .expect_err("101 events");
    assert!(
        matches!(
            err,
            StoreError::TooManyEvents {
                count: 101,
                max: 100,
                ..
            }
        ),
        "{err:?}"
    );
    let mut with_key = request(&s, ExpectedVersion::NoStream, events(&t, 1..=100));
    with_key.idempotency_key = Some("k".into());
    let err = store.append(with_key).await.expect_err("100 + key");
    assert!(
        matches!(err, StoreError::TooManyEvents { items: 101, .. }),
        "{err:?}"
    );
    assert_eq!(store.last_version(&s).await.expect("head"), 0);
}

pub async fn empty_append_is_rejected(store: Store) {
    let t = tenant();
    let err = store
        .append(request(&stream(&t, "a"), ExpectedVersion::NoStream, vec![]))
        .await
        .expect_err("empty");
    assert!(matches!(err, StoreError::EmptyAppend), "{err:?}");
}

pub async fn streams_and_tenants_are_isolated(store: Store) {
    let (t1, t2) = (tenant(), tenant());
    store
        .append(request(
            &stream(&t1, "a"),
            ExpectedVersion::NoStream,
            events(&t1, 1..=2),
        ))
        .await
        .expect("t1");
    store
        .append(request(
            &stream(&t2, "a"),
            ExpectedVersion::NoStream,
            events(&t2, 1..=1),
        ))
        .await
        .expect("t2");
    let read = store.read_from(&stream(&t2, "a"), 1).await.expect("read");
    assert_eq!(read.len(), 1);
    assert!(read.iter().all(|e| e.metadata.tenant == t2));
    assert_eq!(versions(&store, &stream(&t1, "b")).await, Vec::<u64>::new());
}

pub async fn oversized_event_is_rejected(store: Store) {
    let t = tenant();
    let s = stream(&t, "a");
    let mut big = event(&t, 2);
    big.payload
        .insert("blob".into(), json!("x".repeat(450 * 1024)));
    let err = store
        .append(request(
            &s,
            ExpectedVersion::NoStream,
            vec![event(&t, 1), big],
        ))
        .await
        .expect_err("450 KB event");
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("400 KB"), "{err}");
    assert_eq!(
        store.last_version(&s).await.expect("head"),
        0,
        "nothing written"
    );
}

pub async fn a_key_is_claimed_once(store: Store) {
    let t = tenant();
    let (a, b) = (stream(&t, "a"), stream(&t, "b"));
    let takers = join_all((0..8).map(|_| store.claim(&a, "started:x@0.1"))).await;
    let won = takers
        .into_iter()
        .map(Result::unwrap)
        .filter(|w| *w)
        .count();
    assert_eq!(won, 1, "exactly one of eight concurrent claims wins");
    assert!(!store.claim(&a, "started:x@0.1").await.unwrap());
    assert!(store.claim(&a, "started:x@0.2").await.unwrap());
    assert!(
        store.claim(&b, "started:x@0.1").await.unwrap(),
        "keys are per stream"
    );
    assert_eq!(
        store.last_version(&a).await.unwrap(),
        0,
        "a claim is not an event"
    );
}

pub async fn claims_and_idempotent_appends_share_keys(store: Store) {
    let t = tenant();
    let s = stream(&t, "s");
    let mut first = request(&s, ExpectedVersion::Any, events(&t, 1..=1));
    first.idempotency_key = Some("started:k".into());
    store.append(first).await.unwrap();
    assert!(!store.claim(&s, "started:k").await.unwrap());
    assert!(store.claim(&s, "started:other").await.unwrap());
    let mut second = request(&s, ExpectedVersion::Any, events(&t, 2..=2));
    second.idempotency_key = Some("started:other".into());
    assert!(matches!(
        store.append(second).await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
}
