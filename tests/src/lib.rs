//! The local stack, shared by the `wfe-local` command and the end-to-end tests: the SAM template
//! read as the single source of tables and function settings, the moto endpoint (loopback only),
//! and the DynamoDB Streams bridge that hands records to stream functions as Lambda would.

pub mod capacity;
pub mod endpoint;
pub mod esm;
pub mod failures;
pub mod meter;
pub mod proxy;
pub mod runner;
pub mod runtime_api;
pub mod streams;
pub mod template;
pub mod web;
pub mod writes;

pub use endpoint::workspace_root;
