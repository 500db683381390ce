//! The engine: what the stream functions do with an execution's events. The orchestrator replays
//! an execution, runs `decide` and appends the decisions; the worker performs scheduled tasks.
//! Both are idempotent under at-least-once delivery.

pub mod http;
pub mod batch;
mod orchestrator;
pub mod timers;
mod worker;

pub use orchestrator::Orchestrator;
pub use worker::Worker;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::execution::{ExecutionEvent, ParentRef};
use crate::workflows::Version;

/// The first event of an execution of `version`.
pub fn started(execution_id: &str, version: &Version, input: Value, parent: Option<ParentRef>) -> ExecutionEvent {
    ExecutionEvent::ExecutionStarted {
        execution_id: execution_id.to_owned(),
        workflow_id: version.workflow_id.clone(),
        workflow_version: version.version,
        definition: Box::new(version.definition.clone()),
        input,
        parent,
    }
}

/// A stable id from parts: the same request always names the same execution.
pub fn derived_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    let h = hex::encode(&digest[..16]);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}
