//! End-to-end tests against the local stack (moto). One binary, one module per area.
//! Isolation: every test works under its own tenant or its own stack of tables; none resets moto.

mod support;

mod apigw;
mod conflicts;
mod delivery;
mod edge;
mod event_store;
mod exactly_once;
mod federation;
mod hostile;
mod lambda_binary;
mod llm;
mod mcp;
mod migrations;
mod outage;
mod poison;
mod sigv4;
mod stream_delivery;
mod web;
mod workflows;
