//! The timer function: on its schedule, fires every due timer (waits, retry back-offs, step and
//! approval timeouts) into its execution's stream, then sweeps: budget reservations whose
//! settlement never landed are settled from their step's recorded outcome.

use shared::engine::budget::Budgets;
use shared::engine::sweep::{settle_stale_holds, Swept};
use shared::engine::timers::{fire_due, Fired};
use shared::engine::Services;

pub struct Handler {
    services: Services,
    budgets: Budgets,
    hold_grace: chrono::Duration,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tick {
    pub fired: usize,
    pub failed: usize,
    pub holds_settled: usize,
    pub holds_released: usize,
    pub holds_failed: usize,
}

impl Handler {
    pub fn new(
        config: &shared::config::Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, String> {
        let tables = config.tables().map_err(|e| e.to_string())?;
        let grace = config.hold_sweep_grace_secs().map_err(|e| e.to_string())?;
        Ok(Self {
            services: Services::new(config, sdk)?,
            budgets: Budgets::new(shared::aws::dynamodb(sdk), tables.state),
            hold_grace: chrono::Duration::seconds(grace.min(i64::MAX as u64) as i64),
        })
    }

    pub async fn handle(&self) -> Result<Tick, String> {
        let now = chrono::Utc::now();
        let Fired { fired, failed } =
            fire_due(&self.services.repo, &self.services.projections, now).await?;
        // A sweep failure is logged and retried next tick; it never holds the timers back.
        let swept = settle_stale_holds(&self.budgets, &self.services.repo, now, self.hold_grace)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reservation sweep failed; next tick retries");
                Swept::default()
            });
        Ok(Tick {
            fired,
            failed,
            holds_settled: swept.settled,
            holds_released: swept.released,
            holds_failed: swept.failed,
        })
    }
}
