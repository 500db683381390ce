//! The event envelope: what every stored event looks like, whatever its payload.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::StoreError;

/// Identifies one event stream. It always starts with the tenant, so that every key in every table
/// carries the tenant and a stream can never be read or written across tenants by accident.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId {
    raw: String,
    tenant_len: usize,
}

impl StreamId {
    const SEP: char = '#';

    /// `tenant#category#id`; no part may be empty or contain `#`.
    pub fn new(tenant: &str, category: &str, id: &str) -> Result<Self, StoreError> {
        for (what, part) in [("tenant", tenant), ("category", category), ("id", id)] {
            if part.is_empty() || part.contains(Self::SEP) {
                return Err(StoreError::InvalidStreamId(format!(
                    "{what} {part:?} must be non-empty and must not contain '{}'",
                    Self::SEP
                )));
            }
        }
        Ok(Self {
            raw: format!("{tenant}{sep}{category}{sep}{id}", sep = Self::SEP),
            tenant_len: tenant.len(),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.raw[..self.tenant_len]
    }

    pub fn category(&self) -> &str {
        self.raw[self.tenant_len + 1..]
            .split(Self::SEP)
            .next()
            .unwrap_or_default()
    }

    /// The id within the category (an execution's id).
    pub fn id(&self) -> &str {
        self.raw.rsplit(Self::SEP).next().unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl TryFrom<String> for StreamId {
    type Error = StoreError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let mut parts = raw.splitn(3, Self::SEP);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(t), Some(c), Some(i)) => Self::new(t, c, i),
            _ => Err(StoreError::InvalidStreamId(format!(
                "{raw:?} is not of the form tenant#category#id"
            ))),
        }
    }
}

impl From<StreamId> for String {
    fn from(id: StreamId) -> Self {
        id.raw
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Who did what, in which request, and when. Time comes in as data: the store never reads a clock
/// into an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub tenant: String,
    pub actor: Option<String>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// An event about to be appended; the store assigns its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: String,
    pub schema_version: u32,
    /// Kept as a native DynamoDB map so stream filters and consumers can read its fields.
    pub payload: Map<String, Value>,
    pub metadata: Metadata,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub stream_id: StreamId,
    pub version: u64,
    pub event_id: String,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Map<String, Value>,
    pub metadata: Metadata,
}

impl Envelope {
    pub fn from_new(stream_id: StreamId, version: u64, event: NewEvent) -> Self {
        Self {
            stream_id,
            version,
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
        }
    }
}

/// Optimistic concurrency for an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (0 means "no stream").
    Exact(u64),
    /// Append at the end, whatever it is.
    Any,
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
            Self::Any => f.write_str("any version"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub stream_id: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Same key and same request returns the first result; same key, other request is a conflict.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    pub first_version: u64,
    pub last_version: u64,
    /// True when an earlier append with the same idempotency key is being returned again.
    pub replayed: bool,
}

/// One page of a stream read; `next` is where the following page starts, if there may be one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<Envelope>,
    pub next: Option<u64>,
}

/// The latest saved state of a stream, so replay starts from `version + 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub stream_id: StreamId,
    pub version: u64,
    pub schema_version: u32,
    pub state: Map<String, Value>,
}
