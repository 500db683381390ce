//! The timer function: on its schedule, fires every due timer (waits, retry back-offs, step and
//! approval timeouts) into its execution's stream.

use shared::engine::timers::{fire_due, Fired};
use shared::engine::Services;

pub struct Handler {
    services: Services,
}

impl Handler {
    pub fn new(
        config: &shared::config::Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, String> {
        Ok(Self {
            services: Services::new(config, sdk)?,
        })
    }

    pub async fn handle(&self) -> Result<Fired, String> {
        fire_due(
            &self.services.repo,
            &self.services.projections,
            chrono::Utc::now(),
        )
        .await
    }
}
