//! How an envelope is laid out as a DynamoDB item: flat, named attributes (so stream filters and
//! consumers can match on `event_type` or `tenant`) and the payload as a native map.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Envelope, Metadata, StoreError, StreamId};

/// Attribute names of the events table's key.
pub const STREAM_ID: &str = "stream_id";
pub const VERSION: &str = "version";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EventItem {
    stream_id: StreamId,
    version: u64,
    event_id: String,
    event_type: String,
    schema_version: u32,
    payload: Map<String, Value>,
    tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<String>,
    occurred_at: DateTime<Utc>,
}

impl From<Envelope> for EventItem {
    fn from(e: Envelope) -> Self {
        Self {
            stream_id: e.stream_id,
            version: e.version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            tenant: e.metadata.tenant,
            actor: e.metadata.actor,
            correlation_id: e.metadata.correlation_id,
            causation_id: e.metadata.causation_id,
            occurred_at: e.metadata.occurred_at,
        }
    }
}

impl From<EventItem> for Envelope {
    fn from(i: EventItem) -> Self {
        Self {
            stream_id: i.stream_id,
            version: i.version,
            event_id: i.event_id,
            event_type: i.event_type,
            schema_version: i.schema_version,
            payload: i.payload,
            metadata: Metadata {
                tenant: i.tenant,
                actor: i.actor,
                correlation_id: i.correlation_id,
                causation_id: i.causation_id,
                occurred_at: i.occurred_at,
            },
        }
    }
}

/// Decodes any serde_dynamo-compatible item (SDK or Lambda event types) into an envelope.
pub(crate) fn envelope_from_item(
    item: impl Into<serde_dynamo::Item>,
) -> Result<Envelope, StoreError> {
    serde_dynamo::from_item::<_, EventItem>(item)
        .map(Envelope::from)
        .map_err(|e| StoreError::Decode(e.to_string()))
}
