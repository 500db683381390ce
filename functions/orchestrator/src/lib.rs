//! The stream processor: every execution event on the events table's stream reaches it; it
//! replays the execution, appends the next decisions and updates the read models.

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbEventResponse;
use shared::engine::{Orchestrator, Services};

pub struct Handler {
    orchestrator: Orchestrator,
    services: Services,
}

impl Handler {
    pub fn new(
        config: &shared::config::Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, String> {
        let services = Services::new(config, sdk)?;
        Ok(Self {
            orchestrator: services.orchestrator(),
            services,
        })
    }

    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        shared::engine::batch::orchestrate(&self.orchestrator, event, &self.services.upcasters)
            .await
    }
}
