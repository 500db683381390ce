//! Upcasting: old event shapes are rewritten to the current one as they are read, so stored
//! history is never modified and the domain only ever sees current schemas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Envelope, StoreError};

/// Turns a payload of schema version `n` into version `n + 1`.
pub type UpcastFn =
    Arc<dyn Fn(Map<String, Value>) -> Result<Map<String, Value>, String> + Send + Sync>;

/// Upcasters keyed by (event type, schema version they read); nested so a lookup on the read path
/// borrows the event type instead of allocating a key.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<String, BTreeMap<u32, UpcastFn>>,
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step from `from_version` to `from_version + 1` for `event_type`.
    pub fn register(
        mut self,
        event_type: &str,
        from_version: u32,
        step: impl Fn(Map<String, Value>) -> Result<Map<String, Value>, String> + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .entry(event_type.to_owned())
            .or_default()
            .insert(from_version, Arc::new(step));
        self
    }

    /// Applies every registered step in order until none matches the envelope's version.
    pub fn apply(&self, mut envelope: Envelope) -> Result<Envelope, StoreError> {
        let Some(steps) = self.steps.get(envelope.event_type.as_str()) else {
            return Ok(envelope);
        };
        while let Some(step) = steps.get(&envelope.schema_version) {
            let payload = std::mem::take(&mut envelope.payload);
            envelope.payload = step(payload).map_err(|reason| StoreError::Upcast {
                event_type: envelope.event_type.clone(),
                schema_version: envelope.schema_version,
                reason,
            })?;
            envelope.schema_version += 1;
        }
        Ok(envelope)
    }
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self
            .steps
            .iter()
            .flat_map(|(t, vs)| vs.keys().map(move |v| (t, v)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}
