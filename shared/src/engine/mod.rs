//! The engine: what the stream functions do with an execution's events. The orchestrator replays
//! an execution, runs `decide` and appends the decisions; the worker performs scheduled tasks.
//! Both are idempotent under at-least-once delivery.

pub mod batch;
pub mod budget;
pub mod http;
pub mod llm;
pub mod orchestrator;
pub mod prices;
pub mod rebuild;
pub mod states;
pub mod sweep;
pub mod timers;
mod worker;

pub use orchestrator::Orchestrator;
pub use worker::Worker;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::execution::{ExecutionEvent, ParentRef};
use crate::workflows::Version;

/// The first event of an execution of `version`.
pub fn started(
    execution_id: &str,
    version: &Version,
    input: Value,
    parent: Option<ParentRef>,
) -> ExecutionEvent {
    ExecutionEvent::ExecutionStarted {
        execution_id: execution_id.to_owned(),
        workflow_id: version.workflow_id.clone(),
        workflow_version: version.version,
        definition: Box::new(version.definition.clone()),
        input,
        parent,
    }
}

/// A stable id from parts: the same request always names the same execution.
pub fn derived_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    let h = hex::encode(&digest[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The clients every execution-facing function needs, built once per cold start.
#[derive(Clone)]
pub struct Services {
    pub repo: crate::executions::ExecutionRepo,
    pub projections: crate::executions::Projections,
    pub workflows: crate::workflows::WorkflowStore,
    pub usage: crate::executions::usage::UsageLedger,
    pub upcasters: std::sync::Arc<crate::events::Upcasters>,
    /// What the stores were built on, for the function's other stores.
    pub clients: crate::aws::Clients,
}

impl Services {
    pub fn new(
        config: &crate::config::Config,
        sdk: &crate::aws::SdkConfig,
    ) -> Result<Self, String> {
        Self::with_clients(config, crate::aws::Clients::new(sdk))
    }

    pub fn with_clients(
        config: &crate::config::Config,
        clients: crate::aws::Clients,
    ) -> Result<Self, String> {
        let tables = config.tables().map_err(|e| e.to_string())?;
        let dynamodb = clients.dynamodb();
        let upcasters = std::sync::Arc::new(crate::events::Upcasters::default());
        let store = crate::events::DynamoEventStore::new(
            dynamodb.clone(),
            crate::events::EventTables {
                events: tables.events,
                state: tables.state.clone(),
            },
            crate::events::Upcasters::default(),
        );
        Ok(Self {
            repo: crate::executions::ExecutionRepo::new(std::sync::Arc::new(store)),
            projections: crate::executions::Projections::new(
                dynamodb.clone(),
                tables.state.clone(),
            ),
            workflows: crate::workflows::WorkflowStore::new(dynamodb.clone(), tables.state.clone()),
            usage: crate::executions::usage::UsageLedger::new(dynamodb, tables.state),
            upcasters,
            clients,
        })
    }

    pub fn orchestrator(&self) -> Orchestrator {
        Orchestrator {
            usage: Some(self.usage.clone()),
            ..Orchestrator::new(self.repo.clone(), self.projections.clone())
        }
    }

    /// The worker with its executors; AI providers are those configured (keys may come from
    /// Secrets Manager, hence async).
    pub async fn worker(
        &self,
        config: &crate::config::Config,
    ) -> Result<std::sync::Arc<Worker>, String> {
        let engine = config.engine().map_err(|e| e.to_string())?;
        let tables = config.tables().map_err(|e| e.to_string())?;
        let clients = &self.clients;
        let prices = llm::Prices::new(clients.dynamodb(), tables.state.clone());
        let budgets = budget::Budgets::new(clients.dynamodb(), tables.state)
            .with_alerts(self.repo.store().clone());
        Ok(Worker::new(
            self.repo.clone(),
            self.workflows.clone(),
            worker::Executors {
                http: http::HttpExecutor::new(
                    engine.allow_private_networks,
                    std::time::Duration::from_secs(engine.http_timeout_secs),
                ),
                llm: llm::Llm::from_config(config, clients, Some(prices), Some(budgets)).await?,
                mcp: crate::mcp::McpClients::new(
                    config.mcp_registry(clients).map_err(|e| e.to_string())?,
                    engine.allow_private_networks,
                    std::time::Duration::from_secs(
                        config.mcp_timeout_secs().map_err(|e| e.to_string())?,
                    ),
                ),
                secrets: config.tenant_secrets(clients).map_err(|e| e.to_string())?,
            },
            // Leftover tasks of ended executions are dropped (no spend after a cancel).
            Some(self.projections.clone()),
            worker::Family {
                max_depth: engine.subworkflow_max_depth,
                max_descendants: engine.subworkflow_max_descendants,
            },
        ))
    }
}
