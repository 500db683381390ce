//! The step worker: its event filter delivers only `StepScheduled` events; it performs each task
//! once per attempt and appends the outcome.

use std::sync::Arc;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbEventResponse;
use shared::engine::{Services, Worker};

pub struct Handler {
    worker: Arc<Worker>,
    services: Services,
}

impl Handler {
    pub async fn new(
        config: &shared::config::Config,
        sdk: &shared::aws::SdkConfig,
    ) -> Result<Self, String> {
        let services = Services::new(config, sdk)?;
        Ok(Self {
            worker: services.worker(config).await?,
            services,
        })
    }

    /// One batch, with `time_left` before the invocation's timeout.
    pub async fn handle(
        &self,
        event: Event,
        time_left: std::time::Duration,
    ) -> DynamoDbEventResponse {
        shared::engine::batch::work(
            &self.worker,
            event,
            &self.services.upcasters,
            shared::engine::batch::deadline(time_left),
        )
        .await
    }
}
