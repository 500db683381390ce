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

/// Time left in a Lambda invocation whose deadline is `deadline_ms` (milliseconds since the Unix
/// epoch, as the Runtime API gives it).
pub fn time_left(deadline_ms: u64) -> std::time::Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
