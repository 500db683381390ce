//! Executions in the event store: one stream per execution (`tenant#execution#id`), replayed
//! from the latest snapshot plus the events after it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::execution::{evolve, ExecutionEvent, ExecutionState};
use crate::events::{
    AppendRequest, AppendResult, Envelope, EventStore, ExpectedVersion, Metadata, NewEvent,
    Snapshot, StoreError, StreamId,
};

pub const CATEGORY: &str = "execution";
/// Version of the snapshot's state shape; a snapshot of another version is ignored (replayed).
pub const STATE_SCHEMA: u32 = 1;
/// Save a snapshot once this many events were replayed past the last one.
pub const SNAPSHOT_EVERY: u64 = 100;
/// Events per append: a TransactWriteItems takes 100 items, two are reserved.
pub const APPEND_CHUNK: usize = 90;

pub fn stream_id(tenant: &str, execution_id: &str) -> Result<StreamId, StoreError> {
    StreamId::new(tenant, CATEGORY, execution_id)
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {version} of {stream}: {reason}")]
    Decode {
        stream: String,
        version: u64,
        reason: String,
    },
}

impl RepoError {
    /// Retrying later may help (the backend failed or another writer won).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Backend(_) | StoreError::Conflict { .. })
        )
    }
}

/// A loaded execution and how many events the replay read (for snapshotting and metrics).
pub struct Loaded {
    pub state: ExecutionState,
    pub replayed: u64,
    pub snapshot_version: u64,
}

#[derive(Clone)]
pub struct ExecutionRepo {
    store: Arc<dyn EventStore>,
}

/// Who appends and why: the metadata every appended event carries.
pub struct Cause<'a> {
    pub tenant: &'a str,
    pub actor: &'a str,
    pub correlation_id: &'a str,
    pub causation_id: Option<&'a str>,
    pub at: DateTime<Utc>,
}

pub fn decode(envelope: &Envelope) -> Result<ExecutionEvent, RepoError> {
    ExecutionEvent::from_parts(&envelope.event_type, &envelope.payload).map_err(|e| {
        RepoError::Decode {
            stream: envelope.stream_id.to_string(),
            version: envelope.version,
            reason: e.to_string(),
        }
    })
}

impl ExecutionRepo {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Replays the stream from its snapshot (if any) and the events after it.
    pub async fn load(&self, stream: &StreamId) -> Result<Loaded, RepoError> {
        let mut state = ExecutionState::default();
        let mut snapshot_version = 0;
        if let Some(s) = self.store.load_snapshot(stream).await? {
            if s.schema_version == STATE_SCHEMA {
                if let Ok(restored) = serde_json::from_value(serde_json::Value::Object(s.state)) {
                    state = restored;
                    snapshot_version = s.version;
                }
            }
        }
        let loaded = self.catch_up(stream, state).await?;
        Ok(Loaded {
            snapshot_version,
            ..loaded
        })
    }

    /// Brings a state (a warm invocation's cached copy) up to date with the events after it.
    pub async fn catch_up(
        &self,
        stream: &StreamId,
        mut state: ExecutionState,
    ) -> Result<Loaded, RepoError> {
        let from = state.version;
        let events = self.store.read_from(stream, from + 1).await?;
        let replayed = events.len() as u64;
        for envelope in &events {
            let event = decode(envelope)?;
            evolve(
                &mut state,
                envelope.version,
                envelope.metadata.occurred_at,
                &event,
            );
        }
        // Where the last snapshot is, the caller knows (a cache keeps it beside the state); a
        // plain catch-up counts from where it started.
        Ok(Loaded {
            state,
            replayed,
            snapshot_version: from,
        })
    }

    /// Saves a snapshot when enough events were replayed since the last one.
    /// Saves a snapshot when `SNAPSHOT_EVERY` events came after the last one; returns the
    /// version of the newest snapshot now stored.
    pub async fn maybe_snapshot(
        &self,
        stream: &StreamId,
        loaded: &Loaded,
    ) -> Result<u64, RepoError> {
        if loaded.state.version < loaded.snapshot_version + SNAPSHOT_EVERY {
            return Ok(loaded.snapshot_version);
        }
        match self.snapshot(stream, &loaded.state).await {
            Ok(()) => Ok(loaded.state.version),
            // A snapshot only saves replay time: one that cannot be stored (too large, or the
            // table throttled) leaves the execution replayed from its events, never failed.
            Err(e) => {
                tracing::warn!(stream = %stream, version = loaded.state.version, error = %e, "no snapshot saved; replayed from events");
                Ok(loaded.snapshot_version)
            }
        }
    }

    pub async fn snapshot(
        &self,
        stream: &StreamId,
        state: &ExecutionState,
    ) -> Result<(), RepoError> {
        let serde_json::Value::Object(map) = serde_json::to_value(state).unwrap_or_default() else {
            return Ok(());
        };
        self.store
            .save_snapshot(Snapshot {
                stream_id: stream.clone(),
                version: state.version,
                schema_version: STATE_SCHEMA,
                state: map,
            })
            .await?;
        Ok(())
    }

    /// Appends `events` after `expected`, in chunks that fit one transaction each (by count and
    /// by bytes).
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ExecutionEvent>,
        cause: &Cause<'_>,
        idempotency_key: Option<String>,
    ) -> Result<AppendResult, RepoError> {
        let mut expected = expected;
        let mut result: Option<AppendResult> = None;
        let mut events = events
            .into_iter()
            .map(|e| {
                // A timer belongs to the event before it (a retry, a wait, a timeout): a chunk
                // never ends between them, or a crash between chunks would leave a step waiting
                // on a timer that was never recorded.
                let bound = matches!(e, ExecutionEvent::TimerStarted { .. });
                let e = new_event(e, cause);
                (crate::events::approx_item_bytes(&e), bound, e)
            })
            .peekable();
        while events.peek().is_some() {
            let mut chunk: Vec<NewEvent> = Vec::new();
            let mut bytes = 0;
            while let Some((size, bound, _)) = events.peek() {
                let full = chunk.len() >= APPEND_CHUNK
                    || (!chunk.is_empty() && bytes + size > crate::events::MAX_APPEND_BYTES);
                // APPEND_CHUNK leaves room under the 100-item limit for a bound timer.
                if full && !(*bound && chunk.len() < crate::events::MAX_TRANSACT_ITEMS - 2) {
                    break;
                }
                let Some((size, _, event)) = events.next() else {
                    break;
                };
                bytes += size;
                chunk.push(event);
            }
            let r = self
                .store
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected,
                    events: chunk,
                    idempotency_key: if result.is_none() {
                        idempotency_key.clone()
                    } else {
                        None
                    },
                })
                .await?;
            if r.replayed {
                return Ok(r);
            }
            crate::telemetry::metrics::emit(
                "event_store_events_total",
                (r.last_version + 1 - r.first_version) as f64,
                crate::telemetry::metrics::Unit::Count,
                &[("tenant", stream.tenant()), ("category", stream.category())],
            );
            expected = ExpectedVersion::Exact(r.last_version);
            result = Some(match result {
                Some(first) => AppendResult {
                    last_version: r.last_version,
                    ..first
                },
                None => r,
            });
        }
        result.ok_or(RepoError::Store(StoreError::EmptyAppend))
    }
}

/// `Any` appends that lose a race (many writers on one busy stream: a map's iterations finishing
/// together) try again this often, with a growing, jittered pause.
const ANY_RETRIES: u32 = 40;

impl ExecutionRepo {
    /// Appends at the end of the stream whatever its version, retrying through contention.
    pub async fn append_any(
        &self,
        stream: &StreamId,
        events: Vec<ExecutionEvent>,
        cause: &Cause<'_>,
        idempotency_key: Option<String>,
    ) -> Result<AppendResult, RepoError> {
        self.append_any_within(stream, events, cause, idempotency_key, ANY_RETRIES)
            .await
    }

    /// `append_any` that gives up after `retries` lost races: for callers with something better
    /// to do than wait on one busy stream (the timer function postpones that timer instead).
    pub async fn append_any_within(
        &self,
        stream: &StreamId,
        events: Vec<ExecutionEvent>,
        cause: &Cause<'_>,
        idempotency_key: Option<String>,
        retries: u32,
    ) -> Result<AppendResult, RepoError> {
        let mut attempt = 0;
        loop {
            match self
                .append(
                    stream,
                    ExpectedVersion::Any,
                    events.clone(),
                    cause,
                    idempotency_key.clone(),
                )
                .await
            {
                Err(RepoError::Store(StoreError::Conflict { .. })) if attempt < retries => {
                    attempt += 1;
                    let jitter = uuid::Uuid::new_v4().as_u128() % 20;
                    let pause = (5 * attempt as u64).min(100) + jitter as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }
}

pub fn new_event(event: ExecutionEvent, cause: &Cause<'_>) -> NewEvent {
    let (event_type, payload) = event.into_parts();
    NewEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type,
        schema_version: 1,
        payload,
        metadata: Metadata {
            tenant: cause.tenant.to_owned(),
            actor: Some(cause.actor.to_owned()),
            correlation_id: cause.correlation_id.to_owned(),
            causation_id: cause.causation_id.map(str::to_owned),
            occurred_at: cause.at,
        },
    }
}
