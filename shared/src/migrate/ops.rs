//! Migration operations: the changes a migration may make, each idempotent so that a run that
//! stopped half-way can simply be run again.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, CreateGlobalSecondaryIndexAction,
    DeleteGlobalSecondaryIndexAction, DeleteRequest, GlobalSecondaryIndexUpdate, IndexStatus,
    KeySchemaElement, KeyType as DdbKeyType, Projection as DdbProjection, ProjectionType,
    PutRequest, ScalarAttributeType, TimeToLiveSpecification, TimeToLiveStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Tables;

/// Which of the product's tables an operation targets; resolved to the deployed name at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableRef {
    Events,
    State,
    Migrations,
}

impl TableRef {
    pub fn name(self, tables: &Tables) -> &str {
        match self {
            Self::Events => &tables.events,
            Self::State => &tables.state,
            Self::Migrations => &tables.migrations,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    S,
    N,
    B,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAttr {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KeyType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    #[default]
    All,
    KeysOnly,
    Include(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    CreateIndex {
        table: TableRef,
        index: String,
        partition_key: KeyAttr,
        #[serde(default)]
        sort_key: Option<KeyAttr>,
        #[serde(default)]
        projection: Projection,
    },
    DeleteIndex {
        table: TableRef,
        index: String,
    },
    EnableTtl {
        table: TableRef,
        attribute: String,
    },
    DisableTtl {
        table: TableRef,
        attribute: String,
    },
    PutItems {
        table: TableRef,
        items: Vec<Map<String, Value>>,
    },
    DeleteItems {
        table: TableRef,
        keys: Vec<Map<String, Value>>,
    },
    /// Every item matching `filter` gets `update` (DynamoDB expressions, placeholders from
    /// `names` and `values`); the filter is the update's condition too, so an item that changed
    /// meanwhile is left alone, and a second run finds nothing left to do.
    UpdateItems {
        table: TableRef,
        filter: String,
        update: String,
        #[serde(default)]
        names: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        values: Map<String, Value>,
    },
}

/// Index creation on a large table backfills for minutes; a Lambda has at most 15.
const INDEX_WAIT: Duration = Duration::from_secs(13 * 60);
/// BatchWriteItem takes at most 25 requests.
const BATCH: usize = 25;
/// Parallel scan segments of `update_items`.
const SCAN_SEGMENTS: i32 = 4;

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CreateIndex { .. } => "create_index",
            Self::DeleteIndex { .. } => "delete_index",
            Self::EnableTtl { .. } => "enable_ttl",
            Self::DisableTtl { .. } => "disable_ttl",
            Self::PutItems { .. } => "put_items",
            Self::DeleteItems { .. } => "delete_items",
            Self::UpdateItems { .. } => "update_items",
        }
    }

    /// Static checks, so a bad file is refused before anything runs.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::CreateIndex { index, .. } | Self::DeleteIndex { index, .. }
                if index.len() < 3 =>
            {
                Err(format!("index name {index:?} must be 3 to 255 characters"))
            }
            Self::PutItems { items: rows, .. } | Self::DeleteItems { keys: rows, .. } => rows
                .iter()
                .position(|r| !(r.contains_key("pk") || r.contains_key("stream_id")))
                .map_or(Ok(()), |i| {
                    Err(format!("row {i} has no key attribute (pk or stream_id)"))
                }),
            Self::EnableTtl { attribute, .. } | Self::DisableTtl { attribute, .. }
                if attribute.is_empty() =>
            {
                Err("ttl attribute must be named".into())
            }
            Self::UpdateItems {
                filter,
                update,
                names,
                values,
                ..
            } => {
                if filter.trim().is_empty() || update.trim().is_empty() {
                    return Err("update_items needs a filter and an update".into());
                }
                for text in [filter, update] {
                    for token in placeholders(text) {
                        let known = match token.chars().next() {
                            Some('#') => names.contains_key(token),
                            _ => values.contains_key(token),
                        };
                        if !known {
                            return Err(format!("placeholder {token} in {text:?} is not defined"));
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub async fn run(&self, client: &Client, tables: &Tables) -> Result<(), String> {
        let err = |e: &dyn std::error::Error| DisplayErrorContext(e).to_string();
        match self {
            Self::CreateIndex {
                table,
                index,
                partition_key,
                sort_key,
                projection,
            } => {
                let table = table.name(tables);
                if index_status(client, table, index).await?.is_none() {
                    let keys: Vec<&KeyAttr> = std::iter::once(partition_key)
                        .chain(sort_key.as_ref())
                        .collect();
                    let mut create = CreateGlobalSecondaryIndexAction::builder()
                        .index_name(index)
                        .projection(ddb_projection(projection));
                    let mut definitions = Vec::new();
                    for (key, role) in keys.iter().zip([DdbKeyType::Hash, DdbKeyType::Range]) {
                        create = create.key_schema(
                            KeySchemaElement::builder()
                                .attribute_name(&key.name)
                                .key_type(role)
                                .build()
                                .map_err(|e| err(&e))?,
                        );
                        definitions.push(
                            AttributeDefinition::builder()
                                .attribute_name(&key.name)
                                .attribute_type(scalar(key.kind))
                                .build()
                                .map_err(|e| err(&e))?,
                        );
                    }
                    client
                        .update_table()
                        .table_name(table)
                        .set_attribute_definitions(Some(definitions))
                        .global_secondary_index_updates(
                            GlobalSecondaryIndexUpdate::builder()
                                .create(create.build().map_err(|e| err(&e))?)
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| err(&e))?;
                }
                wait_for(client, table, index, true).await
            }
            Self::DeleteIndex { table, index } => {
                let table = table.name(tables);
                if index_status(client, table, index).await?.is_some() {
                    client
                        .update_table()
                        .table_name(table)
                        .global_secondary_index_updates(
                            GlobalSecondaryIndexUpdate::builder()
                                .delete(
                                    DeleteGlobalSecondaryIndexAction::builder()
                                        .index_name(index)
                                        .build()
                                        .map_err(|e| err(&e))?,
                                )
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| err(&e))?;
                }
                wait_for(client, table, index, false).await
            }
            Self::EnableTtl { table, attribute } | Self::DisableTtl { table, attribute } => {
                let enable = matches!(self, Self::EnableTtl { .. });
                let table = table.name(tables);
                let current = client
                    .describe_time_to_live()
                    .table_name(table)
                    .send()
                    .await
                    .map_err(|e| err(&e))?;
                let desc = current.time_to_live_description();
                let on = desc.and_then(|d| d.time_to_live_status()).is_some_and(|s| {
                    matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                });
                let same_attr = desc.and_then(|d| d.attribute_name()) == Some(attribute.as_str());
                if on == enable && (same_attr || !enable) {
                    return Ok(());
                }
                client
                    .update_time_to_live()
                    .table_name(table)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .attribute_name(attribute)
                            .enabled(enable)
                            .build()
                            .map_err(|e| err(&e))?,
                    )
                    .send()
                    .await
                    .map_err(|e| err(&e))?;
                Ok(())
            }
            Self::PutItems { table, items } => {
                let requests = items
                    .iter()
                    .map(|row| {
                        let item: HashMap<String, AttributeValue> =
                            serde_dynamo::to_item(row).map_err(|e| e.to_string())?;
                        let put = PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(|e| err(&e))?;
                        Ok(WriteRequest::builder().put_request(put).build())
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                batch_write(client, table.name(tables), requests).await
            }
            Self::DeleteItems { table, keys } => {
                let requests = keys
                    .iter()
                    .map(|row| {
                        let key: HashMap<String, AttributeValue> =
                            serde_dynamo::to_item(row).map_err(|e| e.to_string())?;
                        let delete = DeleteRequest::builder()
                            .set_key(Some(key))
                            .build()
                            .map_err(|e| err(&e))?;
                        Ok(WriteRequest::builder().delete_request(delete).build())
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                batch_write(client, table.name(tables), requests).await
            }
            Self::UpdateItems {
                table,
                filter,
                update,
                names,
                values,
            } => update_items(client, table.name(tables), filter, update, names, values).await,
        }
    }
}

/// The `#name` and `:value` placeholders an expression uses.
fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'#' || bytes[i] == b':' {
            let start = i;
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            if i > start + 1 {
                found.push(&text[start..i]);
            }
        } else {
            i += 1;
        }
    }
    found
}

async fn update_items(
    client: &Client,
    table: &str,
    filter: &str,
    update: &str,
    names: &std::collections::BTreeMap<String, String>,
    values: &Map<String, Value>,
) -> Result<(), String> {
    let err = |e: &dyn std::error::Error| DisplayErrorContext(e).to_string();
    // DynamoDB refuses placeholders an expression does not use, so each call gets its own.
    let used = |texts: &[&str]| -> Result<_, String> {
        let tokens: Vec<&str> = texts.iter().flat_map(|t| placeholders(t)).collect();
        let names: HashMap<String, String> = names
            .iter()
            .filter(|(k, _)| tokens.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let values = values
            .iter()
            .filter(|(k, _)| tokens.contains(&k.as_str()))
            .map(|(k, v)| Ok((k.clone(), serde_dynamo::to_attribute_value(v)?)))
            .collect::<Result<HashMap<String, AttributeValue>, serde_dynamo::Error>>()
            .map_err(|e| e.to_string())?;
        Ok((
            (!names.is_empty()).then_some(names),
            (!values.is_empty()).then_some(values),
        ))
    };
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| err(&e))?;
    let key_names: Vec<String> = described
        .table()
        .map(|t| t.key_schema())
        .unwrap_or_default()
        .iter()
        .map(|k| k.attribute_name().to_owned())
        .collect();
    let (scan_names, scan_values) = used(&[filter])?;
    let (update_names, update_values) = used(&[filter, update])?;
    // Segments scanned side by side: a large table in the time one Lambda has. A run cut short
    // starts over, and finds only what is still left (the filter excludes updated items).
    let segment = async |segment: i32| -> Result<(), String> {
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(table)
                .filter_expression(filter)
                .set_expression_attribute_names(scan_names.clone())
                .set_expression_attribute_values(scan_values.clone())
                .segment(segment)
                .total_segments(SCAN_SEGMENTS)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| err(&e))?;
            for item in page.items() {
                let key: HashMap<String, AttributeValue> = key_names
                    .iter()
                    .filter_map(|k| Some((k.clone(), item.get(k)?.clone())))
                    .collect();
                let sent = client
                    .update_item()
                    .table_name(table)
                    .set_key(Some(key))
                    .update_expression(update)
                    .condition_expression(filter)
                    .set_expression_attribute_names(update_names.clone())
                    .set_expression_attribute_values(update_values.clone())
                    .send()
                    .await;
                match sent {
                    Ok(_) => {}
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                    Err(e) => return Err(err(&e)),
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    };
    futures::future::try_join_all((0..SCAN_SEGMENTS).map(segment))
        .await
        .map(|_| ())
}

fn scalar(kind: KeyType) -> ScalarAttributeType {
    match kind {
        KeyType::S => ScalarAttributeType::S,
        KeyType::N => ScalarAttributeType::N,
        KeyType::B => ScalarAttributeType::B,
    }
}

fn ddb_projection(p: &Projection) -> DdbProjection {
    match p {
        Projection::All => DdbProjection::builder()
            .projection_type(ProjectionType::All)
            .build(),
        Projection::KeysOnly => DdbProjection::builder()
            .projection_type(ProjectionType::KeysOnly)
            .build(),
        Projection::Include(attrs) => DdbProjection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(attrs.clone()))
            .build(),
    }
}

async fn index_status(
    client: &Client,
    table: &str,
    index: &str,
) -> Result<Option<IndexStatus>, String> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    Ok(out
        .table()
        .map(|t| t.global_secondary_indexes())
        .unwrap_or_default()
        .iter()
        .find(|g| g.index_name() == Some(index))
        .map(|g| g.index_status().cloned().unwrap_or(IndexStatus::Active)))
}

/// Polls until the index is ACTIVE (or gone), with a deadline rather than a fixed sleep.
async fn wait_for(client: &Client, table: &str, index: &str, present: bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + INDEX_WAIT;
    let mut delay = Duration::from_millis(50);
    loop {
        let status = index_status(client, table, index).await?;
        let done = match (&status, present) {
            (Some(IndexStatus::Active), true) | (None, false) => true,
            (None, true) => {
                return Err(format!(
                    "index {index} on {table} disappeared while being created"
                ))
            }
            _ => false,
        };
        if done {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "index {index} on {table} is still {status:?} after {INDEX_WAIT:?}; run the migration again to keep waiting"
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn batch_write(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<(), String> {
    for chunk in requests.chunks(BATCH) {
        let mut pending = chunk.to_vec();
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            let out = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| DisplayErrorContext(&e).to_string())?;
            pending = out
                .unprocessed_items
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            if attempt >= 8 {
                return Err(format!(
                    "{} writes to {table} stayed unprocessed after retries",
                    pending.len()
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
    Ok(())
}
