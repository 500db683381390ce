//! DynamoDB adapter. Events live in the events table (key `stream_id` + `version`, NEW_IMAGE
//! stream); idempotency records and snapshots live in the state table (key `pk` + `sk`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::item::{envelope_from_item, EventItem, STREAM_ID, VERSION};
use super::{
    request_fingerprint, validate, AppendRequest, AppendResult, Envelope, EventStore,
    ExpectedVersion, Page, Snapshot, StoreError, StreamId, Upcasters,
};

/// Idempotency records outlive any sane client retry window, then DynamoDB's TTL removes them.
const IDEMPOTENCY_TTL_SECS: i64 = 7 * 24 * 3600;
/// The attribute of a claim record holding its taker's token.
const CLAIM: &str = "claim";
/// `Any` appends re-read the head and try again this many times before reporting the conflict.
const ANY_ATTEMPTS: usize = 5;
/// AWS cancels a transaction with `TransactionConflict` while another one holds the same item.
const TRANSACTION_CONFLICT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct EventTables {
    pub events: String,
    pub state: String,
}

#[derive(Clone)]
pub struct DynamoEventStore {
    client: Client,
    tables: EventTables,
    upcasters: Upcasters,
    /// The highest version this process has seen stored, per stream. Events are never deleted, so
    /// a version seen once exists for good: an append after it needs no check that it exists
    /// (which inside a transaction costs two write units). If retention ever deletes streams,
    /// this must go.
    known: Arc<Mutex<HashMap<String, u64>>>,
}

/// Streams whose last version is remembered; past this the memory starts over (a miss costs one
/// read, never correctness).
const KNOWN_STREAMS: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyItem {
    pk: String,
    sk: String,
    /// Absent from a claim record: no append matches it.
    #[serde(default)]
    request_hash: String,
    #[serde(default)]
    first_version: u64,
    #[serde(default)]
    last_version: u64,
    expires_at: i64,
}

/// The head of a snapshot: the state inline when it fits one item, otherwise how many parts
/// hold it and their digest (a torn or expired set of parts reads as no snapshot).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotHead {
    pk: String,
    sk: String,
    stream_id: StreamId,
    version: u64,
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

/// A state up to this size (as JSON) is stored inline in the head; DynamoDB's own encoding of
/// a map is about as large, and an item holds 400 KB.
const SNAPSHOT_INLINE_BYTES: usize = 256 * 1024;
/// Bytes of state JSON per part item (with its keys well under 400 KB).
const SNAPSHOT_PART_BYTES: usize = 350 * 1024;
/// A state larger than this is not snapshotted (replayed from its events instead).
const SNAPSHOT_MAX_PARTS: usize = 64;
/// Parts are an optimisation: they expire (a later turn snapshots again), so a crash between
/// writing parts and the head leaves nothing behind for long.
const SNAPSHOT_PART_TTL_SECS: i64 = 30 * 24 * 3600;

enum Attempt {
    Done(AppendResult),
    Conflict,
    IdempotencyHit,
    TransactionConflict,
}

fn idempotency_key(stream: &StreamId, key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("IDEM#{stream}"))),
        ("sk".to_owned(), AttributeValue::S(key.to_owned())),
    ])
}

fn snapshot_key(stream: &StreamId) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(snapshot_pk(stream))),
        ("sk".to_owned(), AttributeValue::S("SNAP".to_owned())),
    ])
}

fn snapshot_pk(stream: &StreamId) -> String {
    format!("SNAP#{stream}")
}

/// Each part is an item of its own partition: one partition takes about 1,000 write units a
/// second, and a large snapshot would throttle itself.
fn part_key(stream: &StreamId, version: u64, i: u64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("SNAPPART#{stream}#{version:020}#{i:04}")),
        ),
        ("sk".to_owned(), AttributeValue::S("PART".to_owned())),
    ])
}

fn backend<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Backend(DisplayErrorContext(e).to_string())
}

/// A payload as it reads back from DynamoDB, whose numbers have no integer/float distinction
/// (`1.0` reads back as `1`): what a writer that goes on deciding from its own event must see, so
/// that its decisions equal those made from the stored event.
pub fn as_stored(
    payload: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    serde_dynamo::from_item(to_item(payload)?).map_err(|e| StoreError::Decode(e.to_string()))
}

fn to_item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Decode(e.to_string()))
}

impl DynamoEventStore {
    pub fn new(client: Client, tables: EventTables, upcasters: Upcasters) -> Self {
        Self {
            client,
            tables,
            upcasters,
            known: Default::default(),
        }
    }

    /// Remembers that `version` of `stream` is stored.
    fn saw(&self, stream: &StreamId, version: u64) {
        if version == 0 {
            return;
        }
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_STREAMS && !known.contains_key(stream.as_str()) {
                known.clear();
            }
            let v = known.entry(stream.to_string()).or_default();
            *v = (*v).max(version);
        }
    }

    /// Whether `version` of `stream` is stored: from memory, else one consistent read. An append
    /// "after version 7" onto a 5-event stream would otherwise leave a gap.
    async fn exists(&self, stream: &StreamId, version: u64) -> Result<bool, StoreError> {
        if version == 0 {
            return Ok(true);
        }
        let remembered = self
            .known
            .lock()
            .ok()
            .and_then(|k| k.get(stream.as_str()).copied())
            .unwrap_or(0);
        if remembered >= version {
            return Ok(true);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.events)
            .key(STREAM_ID, AttributeValue::S(stream.to_string()))
            .key(VERSION, AttributeValue::N(version.to_string()))
            .projection_expression("#v")
            .expression_attribute_names("#v", VERSION)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let found = out.item.is_some();
        if found {
            self.saw(stream, version);
        }
        Ok(found)
    }

    /// One try of [`EventStore::claim`]; `None` when a transaction held the record.
    async fn claim_once(&self, stream: &StreamId, key: &str) -> Result<Option<bool>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut item = idempotency_key(stream, key);
        item.insert(CLAIM.to_owned(), AttributeValue::S(token.clone()));
        item.insert(
            "expires_at".to_owned(),
            AttributeValue::N((chrono::Utc::now().timestamp() + IDEMPOTENCY_TTL_SECS).to_string()),
        );
        let sent = self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Some(true)),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(failed) => Ok(Some(
                    failed
                        .item()
                        .and_then(|i| i.get(CLAIM))
                        .is_some_and(|t| t == &AttributeValue::S(token)),
                )),
                PutItemError::TransactionConflictException(_) => Ok(None),
                other => Err(backend(other)),
            },
        }
    }

    /// One event without an idempotency key: a conditional put, half the units of a transaction.
    /// A put retried by the SDK after its answer was lost finds its own item; the item returned
    /// with the failed condition tells that apart from another writer's event.
    async fn put_one(&self, request: &AppendRequest, base: u64) -> Result<Attempt, StoreError> {
        let envelope = Envelope::from_new(
            request.stream_id.clone(),
            base + 1,
            request.events[0].clone(),
        );
        let event_id = envelope.event_id.clone();
        let sent = self
            .client
            .put_item()
            .table_name(&self.tables.events)
            .set_item(Some(to_item(&EventItem::from(envelope))?))
            .condition_expression("attribute_not_exists(#v)")
            .expression_attribute_names("#v", VERSION)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let done = Attempt::Done(AppendResult {
            first_version: base + 1,
            last_version: base + 1,
            replayed: false,
        });
        let err = match sent {
            Ok(_) => return Ok(done),
            Err(e) => e,
        };
        let text = DisplayErrorContext(&err).to_string();
        match err.into_service_error() {
            PutItemError::ConditionalCheckFailedException(failed) => {
                let ours = failed
                    .item()
                    .and_then(|i| i.get("event_id"))
                    .is_some_and(|id| id == &AttributeValue::S(event_id));
                Ok(if ours { done } else { Attempt::Conflict })
            }
            // AWS refuses a put on an item a transaction holds.
            PutItemError::TransactionConflictException(_) => Ok(Attempt::TransactionConflict),
            _ if text.contains("Item size") || text.contains("item size") => {
                Err(StoreError::TooLarge {
                    stream_id: request.stream_id.clone(),
                    detail: text,
                })
            }
            _ => Err(StoreError::Backend(text)),
        }
    }

    fn transaction(
        &self,
        request: &AppendRequest,
        base: u64,
        fingerprint: Option<&str>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = Vec::with_capacity(request.events.len() + 2);
        for (i, event) in request.events.iter().enumerate() {
            let envelope = Envelope::from_new(
                request.stream_id.clone(),
                base + 1 + i as u64,
                event.clone(),
            );
            let put = Put::builder()
                .table_name(&self.tables.events)
                .set_item(Some(to_item(&EventItem::from(envelope))?))
                .condition_expression("attribute_not_exists(#v)")
                .expression_attribute_names("#v", VERSION)
                .build()
                .map_err(backend)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        if let (Some(key), Some(fp)) = (&request.idempotency_key, fingerprint) {
            let first = request.events[0].metadata.occurred_at.timestamp();
            let record = IdempotencyItem {
                pk: format!("IDEM#{}", request.stream_id),
                sk: key.clone(),
                request_hash: fp.to_owned(),
                first_version: base + 1,
                last_version: base + request.events.len() as u64,
                expires_at: first + IDEMPOTENCY_TTL_SECS,
            };
            let put = Put::builder()
                .table_name(&self.tables.state)
                .set_item(Some(to_item(&record)?))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(backend)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    async fn attempt(
        &self,
        request: &AppendRequest,
        base: u64,
        fingerprint: Option<&str>,
    ) -> Result<Attempt, StoreError> {
        if request.events.len() == 1 && fingerprint.is_none() {
            return self.put_one(request, base).await;
        }
        let items = self.transaction(request, base, fingerprint)?;
        let idem_index = fingerprint.map(|_| items.len() - 1);
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match sent {
            Ok(_) => {
                return Ok(Attempt::Done(AppendResult {
                    first_version: base + 1,
                    last_version: base + request.events.len() as u64,
                    replayed: false,
                }))
            }
            Err(e) => e,
        };
        let text = DisplayErrorContext(&err).to_string();
        match err {
            SdkError::ServiceError(service) => match service.into_err() {
                TransactWriteItemsError::TransactionCanceledException(cancel) => {
                    let codes: Vec<&str> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    let failed = |i: usize| codes.get(i) == Some(&"ConditionalCheckFailed");
                    if idem_index.is_some_and(failed) {
                        Ok(Attempt::IdempotencyHit)
                    } else if (0..codes.len()).any(failed) {
                        Ok(Attempt::Conflict)
                    } else if codes.contains(&"TransactionConflict") {
                        Ok(Attempt::TransactionConflict)
                    } else if codes.contains(&"ValidationError") || text.contains("size") {
                        Err(StoreError::TooLarge {
                            stream_id: request.stream_id.clone(),
                            detail: text,
                        })
                    } else {
                        Err(StoreError::Backend(text))
                    }
                }
                _ if text.contains("Item size") || text.contains("cannot be larger than 4 MB") => {
                    Err(StoreError::TooLarge {
                        stream_id: request.stream_id.clone(),
                        detail: text,
                    })
                }
                _ => Err(StoreError::Backend(text)),
            },
            _ => Err(StoreError::Backend(text)),
        }
    }

    async fn replay_idempotent(
        &self,
        request: &AppendRequest,
        fingerprint: &str,
    ) -> Result<AppendResult, StoreError> {
        let key = request.idempotency_key.as_deref().unwrap_or_default();
        let record: IdempotencyItem = crate::aws::get_item(
            &self.client,
            &self.tables.state,
            idempotency_key(&request.stream_id, key),
        )
        .await
        .map_err(StoreError::Backend)?
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "idempotency record {key:?} vanished while being read"
            ))
        })?;
        if record.request_hash == fingerprint {
            Ok(AppendResult {
                first_version: record.first_version,
                last_version: record.last_version,
                replayed: true,
            })
        } else {
            Err(StoreError::IdempotencyConflict {
                stream_id: request.stream_id.clone(),
                key: key.to_owned(),
            })
        }
    }

    /// Stores a snapshot's head unless a newer one is stored, then removes the parts of the
    /// head it replaced.
    async fn put_head(&self, head: &SnapshotHead) -> Result<(), StoreError> {
        let sent = self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(to_item(head)?))
            .condition_expression("attribute_not_exists(pk) OR #v < :v")
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":v", AttributeValue::N(head.version.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        let old = match sent {
            Ok(out) => out.attributes,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                return Ok(()); // a newer snapshot is already stored
            }
            // Too large or too deeply nested for one item: the caller stores it in parts.
            Err(e)
                if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                    == Some("ValidationException") =>
            {
                return Err(StoreError::TooLarge {
                    stream_id: head.stream_id.clone(),
                    detail: DisplayErrorContext(&e).to_string(),
                })
            }
            Err(e) => return Err(backend(e)),
        };
        let old_parts = old.as_ref().and_then(|o| {
            let n = |k: &str| match o.get(k) {
                Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
                _ => None,
            };
            Some((n(VERSION)?, n("parts")?))
        });
        if let Some((version, parts)) = old_parts {
            for i in 0..parts {
                // Best effort: a part left behind expires on its own.
                let _ = self
                    .client
                    .delete_item()
                    .table_name(&self.tables.state)
                    .set_key(Some(part_key(&head.stream_id, version, i)))
                    .send()
                    .await;
            }
        }
        Ok(())
    }

    /// The version of the stored snapshot, if any.
    async fn head_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .set_key(Some(snapshot_key(stream)))
            .projection_expression("#v")
            .expression_attribute_names("#v", VERSION)
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(match out.item.as_ref().and_then(|i| i.get(VERSION)) {
            Some(AttributeValue::N(n)) => n.parse().ok(),
            _ => None,
        })
    }

    /// The parts of a snapshot in order, or `None` when any is missing.
    async fn load_parts(
        &self,
        stream: &StreamId,
        version: u64,
        parts: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut found: HashMap<u64, Vec<u8>> = HashMap::new();
        let keys: Vec<_> = (0..parts).map(|i| part_key(stream, version, i)).collect();
        let items = crate::aws::batch_get(&self.client, &self.tables.state, keys, true)
            .await
            .map_err(|e| StoreError::Backend(format!("snapshot parts: {e}")))?;
        for item in items {
            let index = match item.get("pk") {
                Some(AttributeValue::S(pk)) => {
                    pk.rsplit_once('#').and_then(|(_, i)| i.parse::<u64>().ok())
                }
                _ => None,
            };
            if let (Some(i), Some(AttributeValue::B(data))) = (index, item.get("data")) {
                found.insert(i, data.clone().into_inner());
            }
        }
        if found.len() as u64 != parts {
            return Ok(None);
        }
        let mut json = Vec::new();
        for i in 0..parts {
            json.extend(found.remove(&i).unwrap_or_default());
        }
        Ok(Some(json))
    }

    async fn append_at(
        &self,
        request: &AppendRequest,
        base: u64,
        fingerprint: Option<&str>,
    ) -> Result<Attempt, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.attempt(request, base, fingerprint).await? {
                Attempt::TransactionConflict if tries < TRANSACTION_CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(20 * tries as u64)).await;
                }
                Attempt::TransactionConflict => return Ok(Attempt::Conflict),
                other => return Ok(other),
            }
        }
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    /// A conditional put of the idempotency record alone (1 write unit, where an idempotent
    /// one-event append is a two-item transaction: 4 or more). A random token in the record tells
    /// this caller's own write, retried by the SDK after a lost answer, from another's.
    async fn claim(&self, stream: &StreamId, key: &str) -> Result<bool, StoreError> {
        // AWS refuses the put while a transaction (an older worker's idempotent append under the
        // same key) holds the item: wait it out, as appends do.
        for attempt in 1..=TRANSACTION_CONFLICT_ATTEMPTS {
            match self.claim_once(stream, key).await? {
                Some(won) => return Ok(won),
                None if attempt < TRANSACTION_CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
                }
                None => {}
            }
        }
        Err(StoreError::Backend(format!(
            "claim {key:?} kept meeting a transaction on its record"
        )))
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        validate(&request)?;
        let fingerprint = request
            .idempotency_key
            .as_ref()
            .map(|_| request_fingerprint(&request));
        let fp = fingerprint.as_deref();
        let attempts = match request.expected {
            ExpectedVersion::Any => ANY_ATTEMPTS,
            _ => 1,
        };
        for _ in 0..attempts {
            let base = match request.expected {
                ExpectedVersion::NoStream => 0,
                ExpectedVersion::Exact(v) => v,
                ExpectedVersion::Any => self.last_version(&request.stream_id).await?,
            };
            // The base of an `Any` append was just read; any other is checked (usually from memory).
            if !matches!(request.expected, ExpectedVersion::Any)
                && !self.exists(&request.stream_id, base).await?
            {
                break;
            }
            match self.append_at(&request, base, fp).await? {
                Attempt::Done(result) => {
                    self.saw(&request.stream_id, result.last_version);
                    return Ok(result);
                }
                Attempt::IdempotencyHit => {
                    return self
                        .replay_idempotent(&request, fp.unwrap_or_default())
                        .await
                }
                Attempt::Conflict | Attempt::TransactionConflict => {}
            }
        }
        Err(StoreError::Conflict {
            actual: self.last_version(&request.stream_id).await?,
            stream_id: request.stream_id,
            expected: request.expected,
        })
    }

    async fn read_page(
        &self,
        stream: &StreamId,
        from: u64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.events)
            .key_condition_expression("#s = :s AND #v >= :v")
            .expression_attribute_names("#s", STREAM_ID)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":s", AttributeValue::S(stream.to_string()))
            .expression_attribute_values(":v", AttributeValue::N(from.max(1).to_string()))
            .consistent_read(true)
            .limit(limit.max(1) as i32)
            .send()
            .await
            .map_err(backend)?;
        let events = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| envelope_from_item(item).and_then(|e| self.upcasters.apply(e)))
            .collect::<Result<Vec<_>, _>>()?;
        // AWS may return a LastEvaluatedKey before an empty last page; moto may not return one
        // when the page ends exactly at the end. Both end the read correctly.
        if let Some(last) = events.last() {
            self.saw(stream, last.version);
        }
        let next = match (&out.last_evaluated_key, events.last()) {
            (Some(_), Some(last)) => Some(last.version + 1),
            _ => None,
        };
        Ok(Page { events, next })
    }

    async fn last_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.events)
            .key_condition_expression("#s = :s")
            .expression_attribute_names("#s", STREAM_ID)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":s", AttributeValue::S(stream.to_string()))
            .projection_expression("#v")
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(backend)?;
        match out
            .items
            .unwrap_or_default()
            .first()
            .and_then(|i| i.get(VERSION))
        {
            Some(AttributeValue::N(n)) => {
                let v = n
                    .parse()
                    .map_err(|_| StoreError::Decode(format!("version {n:?} is not a number")))?;
                self.saw(stream, v);
                Ok(v)
            }
            Some(other) => Err(StoreError::Decode(format!("version is {other:?}"))),
            None => Ok(0),
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let stream_id = snapshot.stream_id.clone();
        let json =
            serde_json::to_vec(&snapshot.state).map_err(|e| StoreError::Decode(e.to_string()))?;
        let mut head = SnapshotHead {
            pk: snapshot_pk(&stream_id),
            sk: "SNAP".to_owned(),
            stream_id: stream_id.clone(),
            version: snapshot.version,
            schema_version: snapshot.schema_version,
            state: None,
            parts: None,
            digest: None,
        };
        if json.len() <= SNAPSHOT_INLINE_BYTES {
            head.state = Some(snapshot.state);
            match self.put_head(&head).await {
                Err(StoreError::TooLarge { .. }) => {}
                done => return done,
            }
        }
        let chunks: Vec<&[u8]> = json.chunks(SNAPSHOT_PART_BYTES).collect();
        if chunks.len() > SNAPSHOT_MAX_PARTS {
            return Err(StoreError::TooLarge {
                stream_id,
                detail: format!(
                    "a state of {} bytes is more than {SNAPSHOT_MAX_PARTS} snapshot parts",
                    json.len()
                ),
            });
        }
        // A writer that lost the race writes no parts for nothing.
        if self
            .head_version(&stream_id)
            .await?
            .is_some_and(|v| v >= head.version)
        {
            return Ok(());
        }
        let expires_at = chrono::Utc::now().timestamp() + SNAPSHOT_PART_TTL_SECS;
        // Parts first, the head last: a reader never finds a head whose parts are missing,
        // except after they expired, which reads as no snapshot.
        let requests: Vec<_> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                self.client
                    .put_item()
                    .table_name(&self.tables.state)
                    .set_item(Some(part_key(&stream_id, head.version, i as u64)))
                    .item("data", AttributeValue::B(chunk.to_vec().into()))
                    .item("expires_at", AttributeValue::N(expires_at.to_string()))
            })
            .collect();
        let writes = requests.into_iter().map(|r| r.send());
        let written: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
            futures::stream::iter(writes),
            8,
        ))
        .await;
        for w in written {
            w.map_err(backend)?;
        }
        head.parts = Some(chunks.len() as u32);
        head.digest = Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&json)));
        // An empty state beside the parts: code from before parts decodes it, finds no
        // execution in it and replays from events.
        head.state = Some(serde_json::Map::new());
        self.put_head(&head).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let head: Option<SnapshotHead> =
            crate::aws::get_item(&self.client, &self.tables.state, snapshot_key(stream))
                .await
                .map_err(StoreError::Backend)?;
        let Some(head) = head else {
            return Ok(None);
        };
        let state = match (head.parts, head.digest, head.state) {
            (Some(parts), Some(digest), _) => {
                let json = self
                    .load_parts(stream, head.version, u64::from(parts))
                    .await?;
                let whole = json
                    .filter(|j| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(j)) == digest);
                match whole.and_then(|j| serde_json::from_slice(&j).ok()) {
                    Some(state) => state,
                    None => {
                        tracing::warn!(stream = %stream, version = head.version, "snapshot parts missing or torn; replaying from events");
                        return Ok(None);
                    }
                }
            }
            (None, _, Some(state)) => state,
            _ => return Ok(None),
        };
        Ok(Some(Snapshot {
            stream_id: head.stream_id,
            version: head.version,
            schema_version: head.schema_version,
            state,
        }))
    }
}
