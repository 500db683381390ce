//! Structured logs: JSON lines filtered by `RUST_LOG` (the seed's logging variable).

pub mod metrics;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber once; later calls are no-ops, so tests may call it freely.
///
/// `RUST_LOG` takes a default level and per-target levels (`info`, `warn,shared=debug`).
/// Not `EnvFilter`: its span and field directives are never used here, and the regex engine
/// behind them was about 240 KiB of every function's artifact.
pub fn init() {
    let (filter, refused) = filter(std::env::var("RUST_LOG").ok().as_deref());
    let installed = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_target(true),
        )
        // Lambda adds its own timestamps to CloudWatch lines; keep ours for local logs anyway.
        .with(filter)
        .try_init()
        .is_ok();
    if let (true, Some(e)) = (installed, refused) {
        tracing::warn!(error = %e, "RUST_LOG not understood; logging at info");
    }
}

/// The filter `RUST_LOG` asks for, or `info` (with the reason when it was not understood).
fn filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (info(), None),
        Some(directives) => match directives.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (info(), Some(format!("{directives:?}: {e}"))),
        },
    }
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

#[cfg(test)]
mod tests {
    use tracing::Level;

    #[test]
    fn rust_log_sets_the_default_and_per_target_levels() {
        let (f, refused) = super::filter(Some("warn,shared=debug"));
        assert!(refused.is_none());
        assert!(f.would_enable("shared::engine", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::INFO));
        assert!(f.would_enable("hyper", &Level::WARN));
        let (f, refused) = super::filter(None);
        assert!(refused.is_none() && f.would_enable("x", &Level::INFO));
        assert!(!f.would_enable("x", &Level::DEBUG));
        let (f, refused) = super::filter(Some("[span{x=1}]=nonsense"));
        assert!(refused.is_some());
        assert!(f.would_enable("x", &Level::INFO));
    }
}
