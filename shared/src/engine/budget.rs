//! Token and cost budgets, enforced before money is spent: a step reserves its estimated cost
//! with one conditional update (it fits, or nothing changes), then settles with the actual usage
//! (refunding the difference) or releases the reservation when the provider call failed.
//!
//! Items (state table):
//! - `<tenant>#BUDGET` / `CONFIG`: monthly limits (`monthly_usd`, `monthly_tokens`), set by an admin.
//! - `<tenant>#BUDGET` / `PERIOD#<yyyy-mm>`: what is `available_*` this month (created from the
//!   limits by the first reservation), what was `spent_*` and is `reserved_*` now.
//!
//! DynamoDB conditions cannot add, so the remaining amount is kept as its own attribute and the
//! check is `available >= estimate`: concurrent reservations serialise on the item, and the sum
//! of what they reserve can never pass the limit.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeriodUsage {
    #[serde(default)]
    pub spent_usd: f64,
    #[serde(default)]
    pub spent_tokens: u64,
    #[serde(default)]
    pub reserved_usd: f64,
    #[serde(default)]
    pub reserved_tokens: u64,
    #[serde(default)]
    pub available_usd: Option<f64>,
    #[serde(default)]
    pub available_tokens: Option<u64>,
}

/// Money and tokens held for one call until it settles.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    tenant: String,
    period: String,
    usd: Option<f64>,
    tokens: Option<u64>,
    limits: BudgetConfig,
}

/// Shares of a monthly limit whose crossing is announced (once per period each).
pub const THRESHOLDS: [u32; 3] = [50, 80, 95];

/// The category of a tenant's budget streams (`<tenant>#budget#<yyyy-mm>`), where crossed
/// thresholds are recorded as `BudgetThresholdCrossed` events.
pub const ALERT_CATEGORY: &str = "budget";

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("the tenant's monthly budget has {available} left and this call may need {needed}")]
    Exceeded { available: String, needed: String },
    #[error("budget store: {0}")]
    Backend(String),
}

#[derive(Clone)]
pub struct Budgets {
    client: aws_sdk_dynamodb::Client,
    table: String,
    alerts: Option<std::sync::Arc<dyn crate::events::EventStore>>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(tenant: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(format!("{tenant}#BUDGET"))),
        ("sk".to_owned(), s(sk)),
    ])
}

pub fn period(at: DateTime<Utc>) -> String {
    at.format("%Y-%m").to_string()
}

fn backend<E: std::error::Error + 'static>(e: E) -> BudgetError {
    BudgetError::Backend(DisplayErrorContext(e).to_string())
}

impl Budgets {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self {
            client,
            table,
            alerts: None,
        }
    }

    /// Records crossed thresholds as events in this store (and as metrics).
    pub fn with_alerts(mut self, store: std::sync::Arc<dyn crate::events::EventStore>) -> Self {
        self.alerts = Some(store);
        self
    }

    pub async fn config(&self, tenant: &str) -> Result<BudgetConfig, BudgetError> {
        Ok(
            crate::aws::get_item(&self.client, &self.table, key(tenant, "CONFIG"))
                .await
                .map_err(BudgetError::Backend)?
                .unwrap_or_default(),
        )
    }

    pub async fn usage(&self, tenant: &str, at: DateTime<Utc>) -> Result<PeriodUsage, BudgetError> {
        Ok(crate::aws::get_item(
            &self.client,
            &self.table,
            key(tenant, &format!("PERIOD#{}", period(at))),
        )
        .await
        .map_err(BudgetError::Backend)?
        .unwrap_or_default())
    }

    /// Sets the limits; this month's remaining amounts move by the change of each limit.
    pub async fn set(
        &self,
        tenant: &str,
        config: &BudgetConfig,
        at: DateTime<Utc>,
    ) -> Result<(), BudgetError> {
        let old = self.config(tenant).await?;
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(config).map_err(|e| BudgetError::Backend(e.to_string()))?;
        item.extend(key(tenant, "CONFIG"));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        let period_key = key(tenant, &format!("PERIOD#{}", period(at)));
        for (attr, delta) in [
            (
                "available_usd",
                config
                    .monthly_usd
                    .zip(old.monthly_usd)
                    .map(|(a, b)| (a - b).to_string()),
            ),
            (
                "available_tokens",
                config
                    .monthly_tokens
                    .zip(old.monthly_tokens)
                    .map(|(a, b)| (a as i128 - b as i128).to_string()),
            ),
        ] {
            let Some(delta) = delta else { continue };
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(period_key.clone()))
                .update_expression(format!("SET {attr} = {attr} + :d"))
                .condition_expression(format!("attribute_exists({attr})"))
                .expression_attribute_values(":d", AttributeValue::N(delta))
                .send()
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }

    /// Holds `usd` and `tokens` against the tenant's monthly limits; `None` when no limit is set.
    pub async fn reserve(
        &self,
        tenant: &str,
        at: DateTime<Utc>,
        usd: f64,
        tokens: u64,
    ) -> Result<Option<Reservation>, BudgetError> {
        let config = self.config(tenant).await?;
        if config.monthly_usd.is_none() && config.monthly_tokens.is_none() {
            return Ok(None);
        }
        let period = period(at);
        let mut sets = Vec::new();
        let mut conditions = Vec::new();
        let mut values = HashMap::from([
            (":yes".to_owned(), AttributeValue::Bool(true)),
            (":zero".to_owned(), n(0)),
        ]);
        if let Some(limit) = config.monthly_usd {
            sets.push("available_usd = if_not_exists(available_usd, :limit_usd) - :usd, reserved_usd = if_not_exists(reserved_usd, :zero) + :usd");
            conditions.push("((attribute_not_exists(available_usd) AND :fits_usd = :yes) OR available_usd >= :usd)");
            values.insert(":limit_usd".into(), n(limit));
            values.insert(":usd".into(), n(usd));
            values.insert(":fits_usd".into(), AttributeValue::Bool(limit >= usd));
        }
        if let Some(limit) = config.monthly_tokens {
            sets.push("available_tokens = if_not_exists(available_tokens, :limit_tokens) - :tokens, reserved_tokens = if_not_exists(reserved_tokens, :zero) + :tokens");
            conditions.push("((attribute_not_exists(available_tokens) AND :fits_tokens = :yes) OR available_tokens >= :tokens)");
            values.insert(":limit_tokens".into(), n(limit));
            values.insert(":tokens".into(), n(tokens));
            values.insert(":fits_tokens".into(), AttributeValue::Bool(limit >= tokens));
        }
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, &format!("PERIOD#{period}"))))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match r {
            Ok(_) => Ok(Some(Reservation {
                tenant: tenant.to_owned(),
                period,
                usd: config.monthly_usd.map(|_| usd),
                tokens: config.monthly_tokens.map(|_| tokens),
                limits: config,
            })),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let left = self.usage(tenant, at).await?;
                Err(BudgetError::Exceeded {
                    available: match (left.available_usd, left.available_tokens) {
                        (Some(u), _) if config.monthly_usd.is_some() => format!("{u:.6} USD"),
                        (_, Some(t)) => format!("{t} tokens"),
                        _ => "less".into(),
                    },
                    needed: format!("{usd:.6} USD / {tokens} tokens"),
                })
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// Replaces the reservation by what was actually spent (zero when the call failed).
    pub async fn settle(
        &self,
        r: &Reservation,
        spent_usd: f64,
        spent_tokens: u64,
    ) -> Result<(), BudgetError> {
        let mut sets = Vec::new();
        let mut values = HashMap::from([(":zero".to_owned(), n(0))]);
        if let Some(usd) = r.usd {
            sets.push("available_usd = available_usd + :refund_usd, reserved_usd = reserved_usd - :usd, spent_usd = if_not_exists(spent_usd, :zero) + :spent_usd");
            values.insert(":refund_usd".into(), n(usd - spent_usd));
            values.insert(":usd".into(), n(usd));
            values.insert(":spent_usd".into(), n(spent_usd));
        }
        if let Some(tokens) = r.tokens {
            sets.push("available_tokens = available_tokens + :refund_tokens, reserved_tokens = reserved_tokens - :tokens, spent_tokens = if_not_exists(spent_tokens, :zero) + :spent_tokens");
            values.insert(
                ":refund_tokens".into(),
                n(tokens as i128 - spent_tokens as i128),
            );
            values.insert(":tokens".into(), n(tokens));
            values.insert(":spent_tokens".into(), n(spent_tokens));
        }
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&r.tenant, &format!("PERIOD#{}", r.period))))
            .update_expression(format!("SET {}", sets.join(", ")))
            .set_expression_attribute_values(Some(values))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(backend)?;
        let usage: PeriodUsage = serde_dynamo::from_item(updated.attributes.unwrap_or_default())
            .map_err(|e| BudgetError::Backend(e.to_string()))?;
        self.announce(r, &usage).await
    }

    /// Each threshold the period's spend has reached becomes one event (idempotent per period
    /// and threshold, so it is announced once however often it is re-checked) and one metric.
    async fn announce(&self, r: &Reservation, usage: &PeriodUsage) -> Result<(), BudgetError> {
        let Some(store) = &self.alerts else {
            return Ok(());
        };
        let shares = [
            (
                "usd",
                r.limits
                    .monthly_usd
                    .filter(|l| *l > 0.0)
                    .map(|l| usage.spent_usd / l),
            ),
            (
                "tokens",
                r.limits
                    .monthly_tokens
                    .filter(|l| *l > 0)
                    .map(|l| usage.spent_tokens as f64 / l as f64),
            ),
        ];
        for (unit, share) in shares {
            let Some(share) = share else { continue };
            for threshold in THRESHOLDS
                .into_iter()
                .filter(|t| share * 100.0 >= *t as f64)
            {
                let stream = crate::events::StreamId::new(&r.tenant, ALERT_CATEGORY, &r.period)
                    .map_err(|e| BudgetError::Backend(e.to_string()))?;
                let payload = serde_json::json!({
                    "period": r.period, "unit": unit, "threshold_percent": threshold,
                    "spent_usd": usage.spent_usd, "spent_tokens": usage.spent_tokens,
                    "monthly_usd": r.limits.monthly_usd, "monthly_tokens": r.limits.monthly_tokens,
                });
                let event = crate::events::NewEvent {
                    event_id: uuid::Uuid::new_v4().to_string(),
                    event_type: "BudgetThresholdCrossed".into(),
                    schema_version: 1,
                    payload: payload.as_object().cloned().unwrap_or_default(),
                    metadata: crate::events::Metadata {
                        tenant: r.tenant.clone(),
                        actor: Some("budget".into()),
                        correlation_id: format!("budget-{}", r.period),
                        causation_id: None,
                        occurred_at: chrono::Utc::now(),
                    },
                };
                let appended = store
                    .append(crate::events::AppendRequest {
                        stream_id: stream,
                        expected: crate::events::ExpectedVersion::Any,
                        events: vec![event],
                        idempotency_key: Some(format!("threshold-{unit}-{threshold}")),
                    })
                    .await;
                match appended {
                    Ok(a) if !a.replayed => crate::telemetry::metrics::emit(
                        "budget_threshold_crossed",
                        threshold as f64,
                        crate::telemetry::metrics::Unit::Count,
                        &[("tenant", &r.tenant), ("unit", unit)],
                    ),
                    // Announced before (same key; the amounts differ, hence a conflict).
                    Ok(_) | Err(crate::events::StoreError::IdempotencyConflict { .. }) => {}
                    Err(e) => return Err(BudgetError::Backend(e.to_string())),
                }
            }
        }
        Ok(())
    }
}
