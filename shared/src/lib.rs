//! The common crate of the AI workflow engine: everything the Lambda functions share.

pub mod aws;
pub mod config;
pub mod events;
pub mod migrate;
pub mod telemetry;
