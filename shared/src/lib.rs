//! The common crate of the AI workflow engine: everything the Lambda functions share.

pub mod auth;
pub mod aws;
pub mod config;
pub mod domain;
pub mod engine;
pub mod events;
pub mod executions;
pub mod http;
pub mod mcp;
pub mod migrate;
pub mod secrets;
pub mod services;
pub mod telemetry;
pub mod tls;
pub mod workflows;
