//! Event store: the port every adapter implements, plus what they share (validation, request
//! fingerprints for idempotency, upcasting, stream-record decoding).

mod dynamo;
mod envelope;
mod item;
mod memory;
mod stream;
mod upcast;

#[cfg(feature = "testkit")]
pub mod contract;

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};

pub use dynamo::{as_stored, DynamoEventStore, EventTables};
pub use envelope::{
    AppendRequest, AppendResult, Envelope, ExpectedVersion, Metadata, NewEvent, Page, Snapshot,
    StreamId,
};
pub use memory::InMemoryEventStore;
pub use stream::{decode_stream_record, StreamRecordError};
pub use upcast::{UpcastFn, Upcasters};

/// DynamoDB allows 100 items in one TransactWriteItems; one may be the idempotency record.
pub const MAX_TRANSACT_ITEMS: usize = 100;
/// DynamoDB refuses a transaction over 4 MB in all; appends keep well under it (item sizes are
/// estimated, and the idempotency record and version check ride along).
pub const MAX_APPEND_BYTES: usize = 3 * 1024 * 1024;

/// JSON length approximates DynamoDB's item size (names plus values) closely enough for the
/// limits: 400 KB per item, 4 MB per transaction.
pub fn approx_item_bytes(event: &NewEvent) -> usize {
    // Counted as written, not collected: every append sizes its events.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, event) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Default page size for reads that follow every page.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("append to {stream_id} expected {expected} but the stream is at version {actual}: another writer won")]
    Conflict {
        stream_id: StreamId,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("idempotency key {key:?} on {stream_id} was already used for a different request")]
    IdempotencyConflict { stream_id: StreamId, key: String },
    #[error("an append needs at least one event")]
    EmptyAppend,
    #[error(
        "an append of {count} events needs {items} transaction items; at most {max} fit in one"
    )]
    TooManyEvents {
        count: usize,
        items: usize,
        max: usize,
    },
    #[error("event {event_id} belongs to tenant {event_tenant:?} but stream {stream_id} belongs to {stream_tenant:?}")]
    TenantMismatch {
        stream_id: StreamId,
        stream_tenant: String,
        event_id: String,
        event_tenant: String,
    },
    #[error("invalid stream id: {0}")]
    InvalidStreamId(String),
    #[error("event or snapshot on {stream_id} is too large for one DynamoDB item (400 KB)")]
    /// `detail` is DynamoDB's own text, for logs only: it is not part of the message.
    TooLarge { stream_id: StreamId, detail: String },
    #[error("stored item could not be decoded: {0}")]
    Decode(String),
    #[error("upcasting {event_type} v{schema_version} failed: {reason}")]
    Upcast {
        event_type: String,
        schema_version: u32,
        reason: String,
    },
    #[error("event store backend failed: {0}")]
    Backend(String),
}

/// The event store port. Adapters: [`InMemoryEventStore`] and [`DynamoEventStore`]; both pass the
/// contract suite in [`contract`] (feature `testkit`).
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends all events atomically after checking `expected`.
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError>;

    /// Reads up to `limit` events starting at version `from` (inclusive, versions start at 1).
    async fn read_page(&self, stream: &StreamId, from: u64, limit: u32)
        -> Result<Page, StoreError>;

    /// The stream's last version, 0 when it does not exist.
    async fn last_version(&self, stream: &StreamId) -> Result<u64, StoreError>;

    /// Saves a snapshot unless a newer one is already stored.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError>;

    /// Takes `key` on `stream` for one caller, in one small write: `true` for the first taker
    /// (also when its write landed but the answer was lost and it was retried), `false` for
    /// everyone after. Claims share the idempotency records' keys and expiry: a key an idempotent
    /// append used is taken, and an idempotent append under a claimed key is refused.
    async fn claim(&self, stream: &StreamId, key: &str) -> Result<bool, StoreError>;

    /// Reads from `from` to the end, following every page; never silently truncated.
    async fn read_from(&self, stream: &StreamId, from: u64) -> Result<Vec<Envelope>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = Some(from.max(1));
        while let Some(from) = cursor {
            let page = self.read_page(stream, from, DEFAULT_PAGE_SIZE).await?;
            if page.events.is_empty() {
                break;
            }
            cursor = page.next;
            out.extend(page.events);
        }
        Ok(out)
    }
}

/// Checks that do not depend on the backend; both adapters run them first so they fail alike.
pub(crate) fn validate(request: &AppendRequest) -> Result<(), StoreError> {
    if request.events.is_empty() {
        return Err(StoreError::EmptyAppend);
    }
    let items = transact_items(request);
    if items > MAX_TRANSACT_ITEMS {
        return Err(StoreError::TooManyEvents {
            count: request.events.len(),
            items,
            max: MAX_TRANSACT_ITEMS,
        });
    }
    let stream_tenant = request.stream_id.tenant();
    if let Some(e) = request
        .events
        .iter()
        .find(|e| e.metadata.tenant != stream_tenant)
    {
        return Err(StoreError::TenantMismatch {
            stream_id: request.stream_id.clone(),
            stream_tenant: stream_tenant.to_owned(),
            event_id: e.event_id.clone(),
            event_tenant: e.metadata.tenant.clone(),
        });
    }
    Ok(())
}

/// How many TransactWriteItems entries an append takes: its events and the idempotency record
/// (the expected version is checked before, not inside, the transaction).
pub(crate) fn transact_items(request: &AppendRequest) -> usize {
    request.events.len() + request.idempotency_key.is_some() as usize
}

/// Identifies "the same request" for idempotency: what is appended and by whom, not when or under
/// which freshly generated event ids, so a client's retry matches its first attempt.
pub(crate) fn request_fingerprint(request: &AppendRequest) -> String {
    let events: Vec<_> = request
        .events
        .iter()
        .map(|e| {
            json!([
                e.event_type,
                e.schema_version,
                e.payload,
                e.metadata.tenant,
                e.metadata.actor
            ])
        })
        .collect();
    let canonical = json!([request.stream_id.as_str(), request.expected, events]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
