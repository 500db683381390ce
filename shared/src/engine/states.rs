//! States of recently seen executions, kept between warm invocations of a stream function: a
//! turn then reads only the events after the cached version (the store stays the authority; the
//! cache is a start). Each entry keeps the version of the stream's newest snapshot, so a warm
//! function still snapshots every `SNAPSHOT_EVERY` events.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::execution::ExecutionState;
use crate::events::StreamId;
use crate::executions::{ExecutionRepo, Loaded, RepoError};

/// Executions kept by default; past the capacity the cache starts over (a warm Lambda's memory
/// is bounded).
const ENTRIES: usize = 2000;

pub struct StateCache {
    capacity: usize,
    entries: Mutex<HashMap<String, (ExecutionState, u64)>>,
}

impl Default for StateCache {
    fn default() -> Self {
        Self::with_capacity(ENTRIES)
    }
}

impl StateCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
        }
    }

    fn cached(&self, stream: &StreamId) -> Option<(ExecutionState, u64)> {
        self.entries.lock().ok()?.get(stream.as_str()).cloned()
    }

    /// Keeps `state` (with the version of the stream's newest snapshot); an ended execution is
    /// dropped.
    pub fn remember(&self, stream: &StreamId, state: &ExecutionState, snapshot_version: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= self.capacity {
                entries.clear();
            }
            if state.status.is_terminal() {
                entries.remove(stream.as_str());
            } else {
                entries.insert(stream.to_string(), (state.clone(), snapshot_version));
            }
        }
    }

    /// The cached state as it is, unread (for a writer whose exact-version append checks it).
    pub fn peek(&self, stream: &StreamId) -> Option<Loaded> {
        self.cached(stream).map(|(state, snapshot_version)| Loaded {
            state,
            replayed: 0,
            snapshot_version,
        })
    }

    /// The execution as stored now: the cached state caught up, or a full load.
    pub async fn load(&self, repo: &ExecutionRepo, stream: &StreamId) -> Result<Loaded, RepoError> {
        match self.cached(stream) {
            Some((state, snapshot_version)) => {
                let loaded = repo.catch_up(stream, state).await?;
                Ok(Loaded {
                    snapshot_version,
                    ..loaded
                })
            }
            None => repo.load(stream).await,
        }
    }
}
