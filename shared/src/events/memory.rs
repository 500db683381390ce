//! In-memory adapter: the same contract as DynamoDB, for fast unit tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    request_fingerprint, validate, AppendRequest, AppendResult, Envelope, EventStore,
    ExpectedVersion, Page, Snapshot, StoreError, StreamId, Upcasters,
};

/// DynamoDB's item size limit, which this adapter imitates so both fail alike.
const MAX_ITEM_BYTES: usize = 400 * 1024;

use super::approx_item_bytes;

#[derive(Default)]
struct Inner {
    streams: HashMap<StreamId, Vec<Envelope>>,
    idempotency: HashMap<(StreamId, String), (String, AppendResult)>,
    snapshots: HashMap<StreamId, Snapshot>,
}

#[derive(Default)]
pub struct InMemoryEventStore {
    inner: Mutex<Inner>,
    upcasters: Upcasters,
}

impl InMemoryEventStore {
    pub fn new(upcasters: Upcasters) -> Self {
        Self {
            inner: Mutex::default(),
            upcasters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        validate(&request)?;
        if let Some(e) = request
            .events
            .iter()
            .find(|e| approx_item_bytes(e) > MAX_ITEM_BYTES)
        {
            return Err(StoreError::TooLarge {
                stream_id: request.stream_id.clone(),
                detail: format!(
                    "event {} is about {} bytes",
                    e.event_id,
                    approx_item_bytes(e)
                ),
            });
        }
        let fingerprint = request
            .idempotency_key
            .as_ref()
            .map(|_| request_fingerprint(&request));
        let mut inner = self.lock();
        if let (Some(key), Some(fp)) = (&request.idempotency_key, &fingerprint) {
            if let Some((seen, result)) = inner
                .idempotency
                .get(&(request.stream_id.clone(), key.clone()))
            {
                return if seen == fp {
                    Ok(AppendResult {
                        replayed: true,
                        ..*result
                    })
                } else {
                    Err(StoreError::IdempotencyConflict {
                        stream_id: request.stream_id,
                        key: key.clone(),
                    })
                };
            }
        }
        let actual = inner
            .streams
            .get(&request.stream_id)
            .map_or(0, |s| s.len() as u64);
        let base = match request.expected {
            ExpectedVersion::Any => actual,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => v,
        };
        if base != actual {
            return Err(StoreError::Conflict {
                stream_id: request.stream_id,
                expected: request.expected,
                actual,
            });
        }
        let result = AppendResult {
            first_version: base + 1,
            last_version: base + request.events.len() as u64,
            replayed: false,
        };
        let stream = inner.streams.entry(request.stream_id.clone()).or_default();
        for (i, event) in request.events.into_iter().enumerate() {
            stream.push(Envelope::from_new(
                request.stream_id.clone(),
                base + 1 + i as u64,
                event,
            ));
        }
        if let (Some(key), Some(fp)) = (request.idempotency_key, fingerprint) {
            inner
                .idempotency
                .insert((request.stream_id, key), (fp, result));
        }
        Ok(result)
    }

    async fn claim(&self, stream: &StreamId, key: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let slot = (stream.clone(), key.to_owned());
        if inner.idempotency.contains_key(&slot) {
            return Ok(false);
        }
        // No append has this fingerprint: an append under a claimed key conflicts.
        let claimed = AppendResult {
            first_version: 0,
            last_version: 0,
            replayed: false,
        };
        inner.idempotency.insert(slot, ("claim".into(), claimed));
        Ok(true)
    }

    async fn read_page(
        &self,
        stream: &StreamId,
        from: u64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let inner = self.lock();
        let all = inner.streams.get(stream).map_or(&[][..], Vec::as_slice);
        let start = (from.max(1) - 1) as usize;
        let end = (start + limit as usize).min(all.len());
        let slice = all.get(start..end).unwrap_or_default();
        let events = slice
            .iter()
            .cloned()
            .map(|e| self.upcasters.apply(e))
            .collect::<Result<Vec<_>, _>>()?;
        let next = (end < all.len()).then_some(end as u64 + 1);
        Ok(Page { events, next })
    }

    async fn last_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .streams
            .get(stream)
            .map_or(0, |s| s.len() as u64))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let newer_stored = inner
            .snapshots
            .get(&snapshot.stream_id)
            .is_some_and(|s| s.version >= snapshot.version);
        if !newer_stored {
            inner.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock().snapshots.get(stream).cloned())
    }
}

#[cfg(all(test, feature = "testkit"))]
mod contract {
    use std::sync::Arc;

    use super::{InMemoryEventStore, Upcasters};
    use crate::events::EventStore;

    async fn store(upcasters: Upcasters) -> Arc<dyn EventStore> {
        Arc::new(InMemoryEventStore::new(upcasters))
    }

    crate::event_store_contract!(store);
}
