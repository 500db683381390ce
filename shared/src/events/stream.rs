//! Decoding DynamoDB Streams records (as Lambda receives them) back into envelopes.

use aws_lambda_events::dynamodb::EventRecord;

use super::{item::envelope_from_item, Envelope, StoreError, Upcasters};

#[derive(Debug, thiserror::Error)]
pub enum StreamRecordError {
    #[error("stream record {sequence} has no new image: the table's stream must use NEW_IMAGE")]
    MissingImage { sequence: String },
    #[error("stream record {sequence} is not an event: {source}")]
    NotAnEvent {
        sequence: String,
        #[source]
        source: Box<StoreError>,
    },
}

/// Returns the appended envelope for an INSERT record, `None` for other record kinds (events are
/// immutable, so MODIFY and REMOVE carry nothing new), and an error for an INSERT that cannot be
/// read, so the consumer can report that one record instead of failing the batch.
pub fn decode_stream_record(
    record: &EventRecord,
    upcasters: &Upcasters,
) -> Result<Option<Envelope>, StreamRecordError> {
    if record.event_name != "INSERT" {
        return Ok(None);
    }
    let sequence = record.change.sequence_number.clone().unwrap_or_default();
    let image = &record.change.new_image;
    if image.is_empty() {
        return Err(StreamRecordError::MissingImage { sequence });
    }
    envelope_from_item(image.clone())
        .and_then(|e| upcasters.apply(e))
        .map(Some)
        .map_err(|e| StreamRecordError::NotAnEvent {
            sequence,
            source: Box::new(e),
        })
}
