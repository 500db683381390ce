//! Structured logs: JSON lines filtered by `RUST_LOG` (the seed's logging variable).

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls are no-ops, so tests may call it freely.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(true)
        // Lambda adds its own timestamps to CloudWatch lines; keep ours for local logs anyway.
        .try_init();
}
