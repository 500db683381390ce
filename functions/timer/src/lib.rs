//! The timer function: on its schedule, fires every due timer (waits, retry back-offs, step and
//! approval timeouts) into its execution's stream, then sweeps: budget reservations whose
//! settlement never landed are settled from their step's recorded outcome, and running executions
//! that stopped making progress get a turn (or fail as `Stalled`).

use shared::engine::budget::Budgets;
use shared::engine::sweep::{redrive_stalled, settle_stale_holds, Stalls, Swept};
use shared::engine::timers::{fire_due, Fired};
use shared::engine::Services;

pub struct Handler {
    services: Services,
    budgets: Budgets,
    hold_grace: chrono::Duration,
    stall_after: chrono::Duration,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tick {
    pub fired: usize,
    pub failed: usize,
    pub holds_settled: usize,
    pub holds_released: usize,
    pub holds_failed: usize,
    pub stalled_redriven: usize,
    pub stalled_failed: usize,
}

impl Handler {
    pub fn new(
        config: &shared::config::Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, String> {
        let tables = config.tables().map_err(|e| e.to_string())?;
        let grace = config.hold_sweep_grace_secs().map_err(|e| e.to_string())?;
        let stall = config.stall_sweep_after_secs().map_err(|e| e.to_string())?;
        let services = Services::new(config, sdk)?;
        Ok(Self {
            budgets: Budgets::new(services.clients.dynamodb(), tables.state)
                .with_alerts(services.repo.store().clone()),
            hold_grace: chrono::Duration::seconds(grace as i64),
            stall_after: chrono::Duration::seconds(stall as i64),
            services,
        })
    }

    /// One tick, finished before `time_left` runs out (what is left waits for the next tick).
    pub async fn handle(&self, time_left: std::time::Duration) -> Result<Tick, String> {
        let now = chrono::Utc::now();
        // Stop with a margin: the invocation must return before Lambda's timeout cuts it off.
        let deadline =
            std::time::Instant::now() + time_left.saturating_sub(std::time::Duration::from_secs(3));
        let Fired {
            fired,
            failed,
            deferred,
        } = fire_due(
            &self.services.repo,
            &self.services.projections,
            now,
            deadline,
        )
        .await?;
        if deferred {
            tracing::warn!(fired, "timer backlog: the rest fire next tick");
        }
        // A sweep failure is logged and retried next tick; it never holds the timers back.
        let swept = settle_stale_holds(
            &self.budgets,
            &self.services.repo,
            now,
            self.hold_grace,
            deadline,
        )
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reservation sweep failed; next tick retries");
            Swept::default()
        });
        let stalls = redrive_stalled(
            &self.services.orchestrator(),
            &self.services.repo,
            &self.services.projections,
            now,
            self.stall_after,
            deadline,
        )
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stalled-execution sweep failed; next tick retries");
            Stalls::default()
        });
        Ok(Tick {
            stalled_redriven: stalls.redriven,
            stalled_failed: stalls.failed,
            fired,
            failed,
            holds_settled: swept.settled,
            holds_released: swept.released,
            holds_failed: swept.failed,
        })
    }
}
