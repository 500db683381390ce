//! The price table: USD per million input and output tokens, per provider and model, kept as
//! data. List prices are global (`PRICE` / `<provider>#<model>`, seeded by migration 0003); a
//! tenant's admin may override a model's price for that tenant only (`<tenant>#PRICE`, e.g.
//! negotiated rates or a self-hosted model behind an OpenAI-compatible endpoint). Costs are always
//! computed from here, never from code.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub provider: String,
    pub model: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    /// `global` (list price) or `tenant` (this tenant's override).
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

#[derive(Clone)]
pub struct Prices {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

const GLOBAL: &str = "PRICE";

fn partition(tenant: Option<&str>) -> String {
    tenant.map_or_else(|| GLOBAL.to_owned(), |t| format!("{t}#PRICE"))
}

fn key(tenant: Option<&str>, provider: &str, model: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(partition(tenant))),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("{provider}#{model}")),
        ),
    ])
}

fn decode(item: HashMap<String, AttributeValue>, source: &str) -> Result<Price, String> {
    let mut price: Price =
        serde_dynamo::from_item(item).map_err(|e| format!("unreadable price: {e}"))?;
    price.source = source.to_owned();
    Ok(price)
}

impl Prices {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    /// The model's (input, output) USD per million tokens for this tenant (its override, else
    /// the list price), or `None` when it has no price. One BatchGetItem.
    pub async fn price(
        &self,
        tenant: &str,
        provider: &str,
        model: &str,
    ) -> Result<Option<(f64, f64)>, String> {
        let keys = KeysAndAttributes::builder()
            .keys(key(Some(tenant), provider, model))
            .keys(key(None, provider, model))
            .consistent_read(true)
            .build()
            .map_err(|e| e.to_string())?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        let mut found: Vec<Price> = Vec::new();
        for item in out
            .responses
            .and_then(|mut r| r.remove(&self.table))
            .unwrap_or_default()
        {
            let global = matches!(item.get("pk"), Some(AttributeValue::S(pk)) if pk == GLOBAL);
            found.push(decode(item, if global { "global" } else { "tenant" })?);
        }
        let chosen = found
            .iter()
            .find(|p| p.source == "tenant")
            .or_else(|| found.first());
        Ok(chosen.map(|p| (p.input_usd_per_mtok, p.output_usd_per_mtok)))
    }

    /// Every price this tenant pays: list prices, with its overrides in their place.
    pub async fn list(&self, tenant: &str) -> Result<Vec<Price>, String> {
        let mut by_model: std::collections::BTreeMap<(String, String), Price> = Default::default();
        for (pk, source) in [
            (partition(None), "global"),
            (partition(Some(tenant)), "tenant"),
        ] {
            for item in crate::aws::query_partition(&self.client, &self.table, &pk, None).await? {
                let price = decode(item, source)?;
                by_model.insert((price.provider.clone(), price.model.clone()), price);
            }
        }
        Ok(by_model.into_values().collect())
    }

    /// Sets this tenant's price for a model.
    pub async fn set_override(
        &self,
        tenant: &str,
        price: &Price,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Price, String> {
        let stored = Price {
            source: "tenant".into(),
            updated_at: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ..price.clone()
        };
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(&stored).map_err(|e| e.to_string())?;
        item.extend(key(Some(tenant), &price.provider, &price.model));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(stored)
    }

    /// Removes this tenant's price for a model; `false` when it had none.
    pub async fn remove_override(
        &self,
        tenant: &str,
        provider: &str,
        model: &str,
    ) -> Result<bool, String> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(Some(tenant), provider, model)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
