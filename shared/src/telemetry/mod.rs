//! Structured logs: JSON lines filtered by `RUST_LOG` (the seed's logging variable).

pub mod metrics;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber once; later calls are no-ops, so tests may call it freely.
///
/// `RUST_LOG` takes a default level and per-target levels (`info`, `warn,shared=debug`).
/// Not `EnvFilter`: its span and field directives are never used here, and the regex engine
/// behind them was about 240 KiB of every function's artifact (linked only when called).
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
        tracing::warn!(error = %e, "RUST_LOG partly not understood");
    }
}

/// The filter `RUST_LOG` asks for (`info` when unset). Directives this filter cannot take (span
/// and field filters) are left out one by one, and named, rather than dropping the whole value.
fn filter(rust_log: Option<&str>) -> (Targets, Option<String>) {
    let info = || Targets::new().with_default(tracing::Level::INFO);
    let (kept, refused): (Vec<&str>, Vec<&str>) = rust_log
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        // `Targets` would take a span filter (`target[span]=level`) as an odd target name that
        // matches nothing; refuse those out loud instead.
        .partition(|d| !d.contains(['[', ']', '{', '}']) && d.parse::<Targets>().is_ok());
    let targets = if kept.is_empty() {
        info()
    } else {
        kept.join(",").parse().unwrap_or_else(|_| info())
    };
    let refused = (!refused.is_empty()).then(|| {
        format!(
            "directives left out (not supported): {}",
            refused.join(", ")
        )
    });
    (targets, refused)
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
        // One directive it cannot take leaves the others in force.
        let (f, refused) = super::filter(Some("error,shared=loud"));
        assert!(refused.unwrap().contains("shared=loud"));
        assert!(!f.would_enable("x", &Level::WARN));
        assert!(f.would_enable("x", &Level::ERROR));
        // A span filter is refused and named; the rest stays in force.
        let (f, refused) = super::filter(Some("error,shared[exec]=debug"));
        assert!(refused.unwrap().contains("shared[exec]=debug"));
        assert!(!f.would_enable("shared", &Level::DEBUG));
        assert!(f.would_enable("shared", &Level::ERROR));
    }
}
