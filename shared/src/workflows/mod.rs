//! Workflow definitions in the state table, versioned and immutable per version:
//!
//! - `<tenant>#WF#<id>` / `HEAD`: name, latest version, status (active or archived); listed per
//!   tenant through gsi1 (`<tenant>#WORKFLOWS`, ordered by creation).
//! - `<tenant>#WF#<id>` / `V#<version>`: the definition as it was at that version.
//!
//! A new version and the head move together in one transaction guarded by the head's version, so
//! two concurrent updates cannot both become version n+1.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use crate::domain::Definition;

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow {0} already exists")]
    Exists(String),
    #[error("no workflow {0}")]
    NotFound(String),
    #[error("workflow {id} has no version {version}")]
    NoVersion { id: String, version: u32 },
    #[error("workflow {0} changed meanwhile; read it again and retry")]
    Conflict(String),
    #[error("{0}")]
    BadCursor(String),
    #[error("state table: {0}")]
    Backend(String),
}

fn backend<E: std::error::Error + 'static>(e: E) -> WorkflowError {
    WorkflowError::Backend(DisplayErrorContext(e).to_string())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    Active,
    Archived,
}

/// The head of a workflow: what listings show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub latest_version: u32,
    pub status: WorkflowStatus,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub workflow_id: String,
    pub version: u32,
    pub definition: Definition,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct HeadItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(flatten)]
    workflow: Workflow,
}

#[derive(Debug, Serialize, Deserialize)]
struct VersionItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    version: Version,
}

#[derive(Clone)]
pub struct WorkflowStore {
    client: Client,
    table: String,
}

fn pk(tenant: &str, id: &str) -> String {
    format!("{tenant}#WF#{id}")
}

fn version_sk(version: u32) -> String {
    format!("V#{version:010}")
}

fn key(pk: String, sk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk)),
    ])
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl WorkflowStore {
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    fn version_put(
        &self,
        tenant: &str,
        version: &Version,
    ) -> Result<TransactWriteItem, WorkflowError> {
        let item = VersionItem {
            pk: pk(tenant, &version.workflow_id),
            sk: version_sk(version.version),
            version: version.clone(),
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(
                serde_dynamo::to_item(item).map_err(|e| WorkflowError::Backend(e.to_string()))?,
            ))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(backend)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Creates version 1 and the head.
    pub async fn create(
        &self,
        tenant: &str,
        actor: &str,
        id: &str,
        mut definition: Definition,
    ) -> Result<(Workflow, Version), WorkflowError> {
        let at = now();
        definition.id = Some(id.to_owned());
        definition.version = Some(1);
        let workflow = Workflow {
            id: id.to_owned(),
            name: definition.name.clone(),
            description: definition.description.clone(),
            latest_version: 1,
            status: WorkflowStatus::Active,
            created_at: at.clone(),
            updated_at: at.clone(),
            created_by: actor.to_owned(),
        };
        let version = Version {
            workflow_id: id.to_owned(),
            version: 1,
            definition,
            created_at: at.clone(),
            created_by: actor.to_owned(),
        };
        let head = HeadItem {
            pk: pk(tenant, id),
            sk: "HEAD".into(),
            gsi1pk: format!("{tenant}#WORKFLOWS"),
            gsi1sk: format!("{at}#{id}"),
            workflow: workflow.clone(),
        };
        let head_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(
                serde_dynamo::to_item(head).map_err(|e| WorkflowError::Backend(e.to_string()))?,
            ))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(backend)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(head_put).build())
            .transact_items(self.version_put(tenant, &version)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok((workflow, version)),
            Err(e) if e.code() == Some("TransactionCanceledException") => {
                Err(WorkflowError::Exists(id.to_owned()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Workflow, WorkflowError> {
        let head: Option<HeadItem> = crate::aws::get_item(
            &self.client,
            &self.table,
            key(pk(tenant, id), "HEAD".into()),
        )
        .await
        .map_err(WorkflowError::Backend)?;
        head.map(|h| h.workflow)
            .ok_or_else(|| WorkflowError::NotFound(id.to_owned()))
    }

    pub async fn version(
        &self,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<Version, WorkflowError> {
        let item: Option<VersionItem> = crate::aws::get_item(
            &self.client,
            &self.table,
            key(pk(tenant, id), version_sk(version)),
        )
        .await
        .map_err(WorkflowError::Backend)?;
        match item {
            Some(i) => Ok(i.version),
            None => {
                self.get(tenant, id).await?;
                Err(WorkflowError::NoVersion {
                    id: id.to_owned(),
                    version,
                })
            }
        }
    }

    /// Adds version `latest + 1`; fails with `Conflict` when the head moved since `expected`.
    pub async fn update(
        &self,
        tenant: &str,
        actor: &str,
        id: &str,
        expected: u32,
        mut definition: Definition,
    ) -> Result<(Workflow, Version), WorkflowError> {
        let current = self.get(tenant, id).await?;
        if current.latest_version != expected {
            return Err(WorkflowError::Conflict(id.to_owned()));
        }
        let at = now();
        let next = expected + 1;
        definition.id = Some(id.to_owned());
        definition.version = Some(next);
        let version = Version {
            workflow_id: id.to_owned(),
            version: next,
            definition: definition.clone(),
            created_at: at.clone(),
            created_by: actor.to_owned(),
        };
        let head = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk(tenant, id), "HEAD".into())))
            // The status stays as it is: a new version of an archived workflow stays archived.
            .update_expression(
                "SET latest_version = :next, updated_at = :at, #name = :name, description = :d",
            )
            .condition_expression("latest_version = :expected")
            .expression_attribute_names("#name", "name")
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()))
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string()))
            .expression_attribute_values(":at", AttributeValue::S(at.clone()))
            .expression_attribute_values(":name", AttributeValue::S(definition.name.clone()))
            .expression_attribute_values(
                ":d",
                definition
                    .description
                    .clone()
                    .map_or(AttributeValue::Null(true), AttributeValue::S),
            )
            .build()
            .map_err(backend)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(head).build())
            .transact_items(self.version_put(tenant, &version)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok((
                Workflow {
                    name: definition.name,
                    description: definition.description,
                    latest_version: next,
                    updated_at: at,
                    ..current
                },
                version,
            )),
            Err(e) if e.code() == Some("TransactionCanceledException") => {
                Err(WorkflowError::Conflict(id.to_owned()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// Archives a workflow: it stays readable, and new executions are refused.
    pub async fn archive(&self, tenant: &str, id: &str) -> Result<Workflow, WorkflowError> {
        self.set_status(tenant, id, "archived").await
    }

    /// Makes an archived workflow startable again (saving a new version does not).
    pub async fn restore(&self, tenant: &str, id: &str) -> Result<Workflow, WorkflowError> {
        self.set_status(tenant, id, "active").await
    }

    async fn set_status(
        &self,
        tenant: &str,
        id: &str,
        status: &str,
    ) -> Result<Workflow, WorkflowError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(tenant, id), "HEAD".into())))
            .update_expression("SET #status = :status, updated_at = :at")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", AttributeValue::S(status.into()))
            .expression_attribute_values(":at", AttributeValue::S(now()))
            .send()
            .await;
        match result {
            Ok(_) => self.get(tenant, id).await,
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Err(WorkflowError::NotFound(id.to_owned()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// A workflow's versions, newest first, one page from `cursor`.
    pub async fn versions(
        &self,
        tenant: &str,
        id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Version>, Option<String>), WorkflowError> {
        let partition = pk(tenant, id);
        let start = cursor
            .map(|c| crate::aws::cursor::decode(c, "pk", &partition))
            .transpose()
            .map_err(|e| WorkflowError::BadCursor(e.into()))?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :v)")
            .expression_attribute_values(":pk", AttributeValue::S(partition))
            .expression_attribute_values(":v", AttributeValue::S("V#".into()))
            .set_exclusive_start_key(start)
            .scan_index_forward(false)
            .limit(limit.clamp(1, 100) as i32)
            .send()
            .await
            .map_err(|e| {
                // A cursor whose key is not one of this partition's is refused by DynamoDB.
                if cursor.is_some() && e.code() == Some("ValidationException") {
                    WorkflowError::BadCursor("this cursor does not continue this listing".into())
                } else {
                    backend(e)
                }
            })?;
        let items: Vec<VersionItem> = serde_dynamo::from_items(out.items.unwrap_or_default())
            .map_err(|e| WorkflowError::Backend(e.to_string()))?;
        let next = out.last_evaluated_key.map(crate::aws::cursor::encode);
        Ok((items.into_iter().map(|i| i.version).collect(), next))
    }

    /// The heads of up to 100 workflows of one tenant in one BatchGetItem (a listing that shows
    /// each item's workflow reads them together, not one by one). Missing ids are left out;
    /// keys DynamoDB leaves unprocessed (throttling) are asked again.
    pub async fn heads(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<Workflow>, WorkflowError> {
        let keys = ids
            .iter()
            .map(|id| key(pk(tenant, id), "HEAD".to_owned()))
            .collect();
        let items = crate::aws::batch_get(&self.client, &self.table, keys, true)
            .await
            .map_err(|e| WorkflowError::Backend(e.to_string()))?;
        let heads: Vec<HeadItem> =
            serde_dynamo::from_items(items).map_err(|e| WorkflowError::Backend(e.to_string()))?;
        Ok(heads.into_iter().map(|h| h.workflow).collect())
    }

    /// A tenant's workflows, oldest first, filtered by status and name prefix.
    pub async fn list(
        &self,
        tenant: &str,
        status: Option<&str>,
        name_prefix: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<Workflow>, Option<String>), WorkflowError> {
        let gsi_pk = format!("{tenant}#WORKFLOWS");
        let start = cursor
            .map(|c| crate::aws::cursor::decode(c, "gsi1pk", &gsi_pk))
            .transpose()
            .map_err(|e| WorkflowError::BadCursor(e.into()))?;
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(gsi_pk))
            .set_exclusive_start_key(start)
            .limit(limit.clamp(1, 100) as i32);
        let mut filters = Vec::new();
        if let Some(status) = status {
            filters.push("#status = :status");
            q = q
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", AttributeValue::S(status.to_owned()));
        }
        if let Some(prefix) = name_prefix {
            filters.push("begins_with(#name, :prefix)");
            q = q
                .expression_attribute_names("#name", "name")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()));
        }
        if !filters.is_empty() {
            q = q.filter_expression(filters.join(" AND "));
        }
        let out = q.send().await.map_err(backend)?;
        let items: Vec<HeadItem> = serde_dynamo::from_items(out.items.unwrap_or_default())
            .map_err(|e| WorkflowError::Backend(e.to_string()))?;
        let next = out.last_evaluated_key.map(crate::aws::cursor::encode);
        Ok((items.into_iter().map(|h| h.workflow).collect(), next))
    }
}
