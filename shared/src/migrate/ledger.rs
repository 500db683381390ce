//! The ledger and the lease lock, both in the migrations table (key `pk` + `sk`), and the runner
//! that ties planning, locking and operations together.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{plan_down, plan_up, status, MigrateError, Migration, Report, StatusRow};
use crate::config::Tables;

const LEDGER_PK: &str = "LEDGER";
const LOCK_PK: &str = "LOCK";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub version: u32,
    pub name: String,
    pub checksum: String,
    pub applied_at: String,
    pub applied_by: String,
}

impl LedgerEntry {
    pub fn id(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LedgerItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    entry: LedgerEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub owner: String,
    pub command: String,
    /// Epoch seconds; a lock past this is free to take.
    pub expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct LockItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    lock: Lock,
}

fn backend(e: impl std::error::Error) -> MigrateError {
    MigrateError::Backend(DisplayErrorContext(e).to_string())
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn ledger_sk(version: u32) -> String {
    format!("{version:010}")
}

/// Runs migrations against one deployment's tables.
pub struct Migrator {
    client: Client,
    tables: Tables,
    owner: String,
    lease: Duration,
}

impl Migrator {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self {
            client,
            tables,
            owner: format!("run-{}", uuid::Uuid::new_v4().simple()),
            // Longer than any one operation's wait, renewed between migrations.
            lease: Duration::from_secs(15 * 60),
        }
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>, MigrateError> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.migrations)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(LEDGER_PK.into()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            for item in out.items.unwrap_or_default() {
                let item: LedgerItem = serde_dynamo::from_item(item)
                    .map_err(|e| MigrateError::Backend(format!("unreadable ledger entry: {e}")))?;
                entries.push(item.entry);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(entries)
    }

    pub async fn status(&self, migrations: &[Migration]) -> Result<Vec<StatusRow>, MigrateError> {
        Ok(status(migrations, &self.ledger().await?))
    }

    /// Applies pending migrations up to `target` (all when `None`).
    pub async fn up(
        &self,
        migrations: &[Migration],
        target: Option<u32>,
    ) -> Result<Report, MigrateError> {
        let command = match target {
            Some(t) => format!("up to {t}"),
            None => "up".to_owned(),
        };
        Ok(self
            .locked(&command, async {
                let ledger = self.ledger().await?;
                let mut applied = Vec::new();
                for m in plan_up(migrations, &ledger, target)? {
                    self.renew().await?;
                    self.run_ops(m, &m.up).await?;
                    self.record(m).await?;
                    tracing::info!(migration = %m.id(), "applied");
                    applied.push(m.id());
                }
                Ok((applied, Vec::new()))
            })
            .await?
            .with_status(self.status(migrations).await?))
    }

    /// Reverts applied migrations above `target`, newest first.
    pub async fn down(
        &self,
        migrations: &[Migration],
        target: u32,
    ) -> Result<Report, MigrateError> {
        Ok(self
            .locked(&format!("down to {target}"), async {
                let ledger = self.ledger().await?;
                let mut reverted = Vec::new();
                for m in plan_down(migrations, &ledger, target)? {
                    self.renew().await?;
                    self.run_ops(m, &m.down).await?;
                    self.client
                        .delete_item()
                        .table_name(&self.tables.migrations)
                        .set_key(Some(key(LEDGER_PK, &ledger_sk(m.version))))
                        .send()
                        .await
                        .map_err(backend)?;
                    tracing::info!(migration = %m.id(), "reverted");
                    reverted.push(m.id());
                }
                Ok((Vec::new(), reverted))
            })
            .await?
            .with_status(self.status(migrations).await?))
    }

    async fn locked(
        &self,
        command: &str,
        work: impl std::future::Future<Output = Result<(Vec<String>, Vec<String>), MigrateError>>,
    ) -> Result<Report, MigrateError> {
        self.acquire(command).await?;
        let outcome = work.await;
        // Release even after a failure so the next run need not wait out the lease.
        let released = self.release().await;
        let (applied, reverted) = outcome?;
        released?;
        Ok(Report {
            command: command.to_owned(),
            applied,
            reverted,
            status: Vec::new(),
        })
    }

    async fn run_ops(&self, m: &Migration, ops: &[super::Op]) -> Result<(), MigrateError> {
        for (i, op) in ops.iter().enumerate() {
            op.run(&self.client, &self.tables)
                .await
                .map_err(|reason| MigrateError::Op {
                    id: m.id(),
                    step: i + 1,
                    op: op.kind().to_owned(),
                    reason,
                })?;
        }
        Ok(())
    }

    async fn record(&self, m: &Migration) -> Result<(), MigrateError> {
        let item = LedgerItem {
            pk: LEDGER_PK.into(),
            sk: ledger_sk(m.version),
            entry: LedgerEntry {
                version: m.version,
                name: m.name.clone(),
                checksum: m.checksum.clone(),
                applied_at: Utc::now().to_rfc3339(),
                applied_by: self.owner.clone(),
            },
        };
        let item =
            serde_dynamo::to_item(&item).map_err(|e| MigrateError::Backend(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.tables.migrations)
            .set_item(Some(item))
            // Only the lock holder writes the ledger; the condition makes a lost lock visible.
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn expiry(&self) -> i64 {
        Utc::now().timestamp() + self.lease.as_secs() as i64
    }

    async fn acquire(&self, command: &str) -> Result<(), MigrateError> {
        let item = LockItem {
            pk: LOCK_PK.into(),
            sk: LOCK_PK.into(),
            lock: Lock {
                owner: self.owner.clone(),
                command: command.to_owned(),
                expires_at: self.expiry(),
            },
        };
        let item =
            serde_dynamo::to_item(&item).map_err(|e| MigrateError::Backend(e.to_string()))?;
        let sent = self
            .client
            .put_item()
            .table_name(&self.tables.migrations)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(
                ":now",
                AttributeValue::N(Utc::now().timestamp().to_string()),
            )
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                let held = self.current_lock().await?;
                Err(match held {
                    Some(lock) => MigrateError::LockHeld {
                        owner: lock.owner,
                        command: lock.command,
                        expires_at: chrono::DateTime::from_timestamp(lock.expires_at, 0)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_else(|| lock.expires_at.to_string()),
                    },
                    // Released between our attempt and our read: report it as held so the caller
                    // retries deliberately instead of racing.
                    None => MigrateError::LockHeld {
                        owner: "unknown".into(),
                        command: "unknown".into(),
                        expires_at: "now".into(),
                    },
                })
            }
            Err(e) => Err(backend(e)),
        }
    }

    pub async fn current_lock(&self) -> Result<Option<Lock>, MigrateError> {
        crate::aws::get_item::<LockItem>(
            &self.client,
            &self.tables.migrations,
            key(LOCK_PK, LOCK_PK),
        )
        .await
        .map(|l| l.map(|l| l.lock))
        .map_err(MigrateError::Backend)
    }

    async fn renew(&self) -> Result<(), MigrateError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.tables.migrations)
            .set_key(Some(key(LOCK_PK, LOCK_PK)))
            .update_expression("SET expires_at = :exp")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":exp", AttributeValue::N(self.expiry().to_string()))
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(MigrateError::LockLost)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn release(&self) -> Result<(), MigrateError> {
        let sent = self
            .client
            .delete_item()
            .table_name(&self.tables.migrations)
            .set_key(Some(key(LOCK_PK, LOCK_PK)))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", AttributeValue::S(self.owner.clone()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // Someone took over an expired lease: nothing of ours to release.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(backend(e)),
        }
    }
}
