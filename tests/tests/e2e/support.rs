//! Fixtures: stacks of tables created from the SAM template on moto.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::SdkConfig;
use shared::config::Tables;
use wfe_local::endpoint::{create_tables, sdk_config};
use wfe_local::template::Template;

/// A set of the template's tables under one stack name.
pub struct Stack {
    pub sdk: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub tables: Tables,
}

impl Stack {
    /// The tables shared by tests that isolate themselves by tenant; one set per test process.
    pub async fn shared() -> Self {
        Self::named(&format!("e2e-shared-{}", std::process::id())).await
    }

    /// Fresh, empty tables for tests that need a table to themselves (ledgers, streams).
    pub async fn fresh(purpose: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Self::named(&format!("e2e-{purpose}-{}-{n}", std::process::id())).await
    }

    async fn named(stack: &str) -> Self {
        let sdk = sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let template = Template::workspace(stack).expect("template");
        create_tables(&dynamodb, &template).await.expect("tables");
        Self {
            tables: template.tables().expect("tables from template"),
            sdk,
            dynamodb,
        }
    }
}
