//! AWS client construction: once per cold start, endpoint and region from the environment.

pub use aws_config::SdkConfig;

/// Loads the SDK configuration the standard way: `AWS_REGION`, credentials chain, and
/// `AWS_ENDPOINT_URL` (plus per-service `AWS_ENDPOINT_URL_<SERVICE>`), which is how the local
/// stack points every client at moto.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

pub fn secretsmanager(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

/// A strongly consistent GetItem decoded into `T`; `None` when there is no such item. Every
/// store reads single items this way.
pub async fn get_item<T: serde::de::DeserializeOwned>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Result<Option<T>, String> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
    out.item
        .map(|item| {
            serde_dynamo::from_item(item).map_err(|e| format!("unreadable item in {table}: {e}"))
        })
        .transpose()
}

/// Every item of one partition (optionally only sort keys starting with `sk_prefix`), all pages,
/// strongly consistent. For small partitions read whole: registries, price tables, a day's ledger.
pub async fn query_partition(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk_prefix: Option<&str>,
) -> Result<Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>, String>
{
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let mut query = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .set_exclusive_start_key(start);
        query = match sk_prefix {
            Some(prefix) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
                .expression_attribute_values(":sk", AttributeValue::S(prefix.to_owned())),
            None => query.key_condition_expression("pk = :pk"),
        };
        let page = query
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(items),
        }
    }
}

/// Pagination cursors: DynamoDB's `LastEvaluatedKey` as URL-safe base64 JSON. A cursor is only
/// accepted back for the listing it came from (same index partition), so it cannot be used to
/// page through another tenant's items.
pub mod cursor {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::types::AttributeValue;
    use base64::Engine as _;

    pub const INVALID: &str = "`cursor` is not a cursor this listing returned";

    pub fn encode(key: HashMap<String, AttributeValue>) -> String {
        let json: serde_json::Value = serde_dynamo::from_item(key).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// The start key in `cursor`, if its `partition_name` attribute is `partition`.
    pub fn decode(
        cursor: &str,
        partition_name: &str,
        partition: &str,
    ) -> Result<HashMap<String, AttributeValue>, &'static str> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| INVALID)?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| INVALID)?;
        if json.get(partition_name).and_then(|v| v.as_str()) != Some(partition) {
            return Err(INVALID);
        }
        serde_dynamo::to_item(json).map_err(|_| INVALID)
    }
}
