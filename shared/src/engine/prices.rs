//! The price table: USD per million input and output tokens, per provider and model, kept as
//! data. List prices are global (`PRICE` / `<provider>#<model>`, seeded by migration 0003); a
//! tenant's admin may override a model's price for that tenant only (`<tenant>#PRICE`, e.g.
//! negotiated rates or a self-hosted model behind an OpenAI-compatible endpoint). Costs are always
//! computed from here, never from code.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
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

/// Cross-region inference profiles put a geography before the model id (`us.anthropic...`).
const PROFILE_PREFIXES: &[&str] = &[
    "us.", "eu.", "apac.", "us-gov.", "global.", "jp.", "au.", "ca.",
];

/// The names a model's price is looked up under, most specific first: the id as given; for
/// Bedrock, the model id inside an inference-profile ARN or id (`arn:...:inference-profile/us.x`
/// and `us.x` are priced as `x`); then, for a dated snapshot or an alias, the family
/// (`gpt-4o-2024-08-06` and `gpt-4o-latest` as `gpt-4o`). Pure, so the rule is tested as such.
pub fn candidates(provider: &str, model: &str) -> Vec<String> {
    let mut out = vec![model.to_owned()];
    let mut base = model.rsplit('/').next().unwrap_or(model).to_owned();
    if provider == "bedrock" {
        if let Some(rest) = PROFILE_PREFIXES.iter().find_map(|p| base.strip_prefix(p)) {
            base = rest.to_owned();
        }
    }
    out.push(base.clone());
    let family = strip_snapshot(&base);
    out.push(family);
    out.dedup();
    let mut seen = std::collections::HashSet::new();
    out.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    out
}

/// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-x-20241022` → `claude-x`, `x-latest` → `x`.
fn strip_snapshot(model: &str) -> String {
    if let Some(rest) = model.strip_suffix("-latest") {
        return rest.to_owned();
    }
    let bytes = model.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = bytes.len();
    // -YYYY-MM-DD
    if n > 11 && bytes[n - 11] == b'-' && bytes[n - 6] == b'-' && bytes[n - 3] == b'-' {
        let (y, m, d) = (&bytes[n - 10..n - 6], &bytes[n - 5..n - 3], &bytes[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return model[..n - 11].to_owned();
        }
    }
    // -YYYYMMDD
    if n > 9 && bytes[n - 9] == b'-' && digits(&bytes[n - 8..]) {
        return model[..n - 9].to_owned();
    }
    model.to_owned()
}

impl Prices {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self { client, table }
    }

    /// The model's (input, output) USD per million tokens for this tenant, or `None` when it has
    /// no price. The names tried, in order (see [`candidates`]): the id as given, then without a
    /// Bedrock inference-profile prefix, then without a date or `-latest` suffix; at each, the
    /// tenant's override before the list price. One BatchGetItem.
    pub async fn price(
        &self,
        tenant: &str,
        provider: &str,
        model: &str,
    ) -> Result<Option<(f64, f64)>, String> {
        let names = candidates(provider, model);
        let keys = names
            .iter()
            .flat_map(|name| [key(Some(tenant), provider, name), key(None, provider, name)])
            .collect();
        let mut found: Vec<Price> = Vec::new();
        for item in crate::aws::batch_get(&self.client, &self.table, keys, true)
            .await
            .map_err(|e| e.to_string())?
        {
            let global = matches!(item.get("pk"), Some(AttributeValue::S(pk)) if pk == GLOBAL);
            found.push(decode(item, if global { "global" } else { "tenant" })?);
        }
        let chosen = names.iter().find_map(|name| {
            let here = |source: &str| {
                found
                    .iter()
                    .find(|p| &p.model == name && p.source == source)
            };
            here("tenant").or_else(|| here("global"))
        });
        Ok(chosen.map(|p| (p.input_usd_per_mtok, p.output_usd_per_mtok)))
    }

    /// The list price this model name resolves to by the matching rule (see [`candidates`]),
    /// if any: what a tenant's own price for that name replaces.
    pub async fn list_price(&self, provider: &str, model: &str) -> Result<Option<Price>, String> {
        for name in candidates(provider, model) {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(None, provider, &name)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| DisplayErrorContext(e).to_string())?;
            if let Some(item) = out.item {
                return decode(item, "global").map(Some);
            }
        }
        Ok(None)
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

#[cfg(test)]
mod tests {
    use super::candidates;

    #[test]
    fn snapshots_and_inference_profiles_are_priced_as_their_model() {
        assert_eq!(
            candidates("openai", "gpt-4o-2024-08-06"),
            ["gpt-4o-2024-08-06", "gpt-4o"]
        );
        assert_eq!(candidates("openai", "gpt-4o"), ["gpt-4o"]);
        assert_eq!(
            candidates("anthropic", "claude-3-5-sonnet-latest"),
            ["claude-3-5-sonnet-latest", "claude-3-5-sonnet"]
        );
        assert_eq!(
            candidates("bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
            [
                "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
                "anthropic.claude-3-5-sonnet-20241022-v2:0"
            ]
        );
        assert_eq!(
            candidates(
                "bedrock",
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.amazon.nova-pro-v1:0"
            )[1],
            "amazon.nova-pro-v1:0"
        );
        assert_eq!(
            candidates("anthropic", "claude-sonnet-4-20250514"),
            ["claude-sonnet-4-20250514", "claude-sonnet-4"]
        );
    }
}
