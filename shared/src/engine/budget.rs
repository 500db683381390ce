//! Token and cost budgets, enforced before money is spent: a step reserves its estimated cost
//! against every budget that applies to it (the tenant's month, the workflow's month, the
//! execution's maximum) in one atomic write (all fit, or nothing changes), then settles with the
//! actual usage (refunding the difference) or releases the reservation when the call failed.
//!
//! Items (state table, partition `<tenant>#BUDGET`):
//! - `CONFIG` / `WORKFLOW#<id>#CONFIG`: monthly limits (`monthly_usd`, `monthly_tokens`), set by
//!   an admin.
//! - `PERIOD#<yyyy-mm>` / `WORKFLOW#<id>#PERIOD#<yyyy-mm>`: what is `available_*` this month
//!   (created from the limits by the first reservation), what was `spent_*` and is `reserved_*`.
//! - `EXECUTION#<id>`: the same for one execution, limited by its definition's `budget`
//!   (expires 90 days after its last reservation).
//!
//! DynamoDB conditions cannot add, so the remaining amount is kept as its own attribute and the
//! check is `available >= estimate`: concurrent reservations serialise on the item, and the sum
//! of what they reserve can never pass the limit.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::transact::TransactError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_tokens: Option<u64>,
}

impl BudgetConfig {
    fn is_set(&self) -> bool {
        self.monthly_usd.is_some() || self.monthly_tokens.is_some()
    }
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
    /// Below zero when the limit was lowered under what the month already spent.
    #[serde(default)]
    pub available_tokens: Option<i64>,
}

/// Whose budget: the tenant's or one workflow's (monthly, set by an admin), or one execution's
/// (its definition's maximum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Tenant,
    Workflow(String),
    Execution(String),
}

impl Scope {
    fn config_sk(&self) -> Option<String> {
        match self {
            Self::Tenant => Some("CONFIG".into()),
            Self::Workflow(w) => Some(format!("WORKFLOW#{w}#CONFIG")),
            Self::Execution(_) => None,
        }
    }

    fn account_sk(&self, period: &str) -> String {
        match self {
            Self::Tenant => format!("PERIOD#{period}"),
            Self::Workflow(w) => format!("WORKFLOW#{w}#PERIOD#{period}"),
            Self::Execution(e) => format!("EXECUTION#{e}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Tenant => "the tenant's monthly budget".into(),
            Self::Workflow(w) => format!("workflow {w}'s monthly budget"),
            Self::Execution(_) => "this execution's budget".into(),
        }
    }
}

/// Who is about to spend: the budgets a call is checked against.
#[derive(Debug, Clone, Default)]
pub struct Spender<'a> {
    pub tenant: &'a str,
    pub workflow_id: Option<&'a str>,
    pub execution_id: Option<&'a str>,
    /// The execution's maximum (its definition's `budget`), in the same shape as a month's.
    pub execution_max: BudgetConfig,
}

/// Money and tokens held on one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hold {
    scope: Scope,
    sk: String,
    usd: Option<f64>,
    tokens: Option<u64>,
    limits: BudgetConfig,
}

/// Money and tokens held for one call (one step attempt) until it settles. It is written with
/// the holds, as `HOLD#<attempt>`, and deleted with the settlement in one transaction: a
/// settlement happens at most once, and a reservation whose worker died can be found and
/// released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    tenant: String,
    attempt: String,
    period: String,
    holds: Vec<Hold>,
    /// The execution whose step made the call: where the sweep finds its recorded usage.
    #[serde(default)]
    execution_id: Option<String>,
}

impl Reservation {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn attempt(&self) -> &str {
        &self.attempt
    }

    pub fn execution_id(&self) -> Option<&str> {
        self.execution_id.as_deref()
    }
}

/// Reservation records are spread over this many partitions of the sparse `holds` index
/// (migration 0005), so the sweep finds them without scanning and no index partition is hot.
pub const HOLD_SHARDS: u32 = 8;
pub const HOLDS_INDEX: &str = "holds";

fn hold_shard(attempt: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(attempt.as_bytes());
    format!("HOLD#{}", u32::from(digest[0]) % HOLD_SHARDS)
}

/// Shares of a monthly limit whose crossing is announced (once per period each).
pub const THRESHOLDS: [u32; 3] = [50, 80, 95];

/// The category of a tenant's budget streams (`<tenant>#budget#<yyyy-mm>`), where crossed
/// thresholds are recorded as `BudgetThresholdCrossed` events.
pub const ALERT_CATEGORY: &str = "budget";

/// A refusal that a concurrent settlement may have made room for is tried this often.
const RESERVE_ROUNDS: usize = 5;

/// How long an execution's account is kept after its last reservation.
const EXECUTION_ACCOUNT_TTL_SECS: i64 = 90 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{scope} has {available} left and this call may need {needed}")]
    Exceeded {
        scope: String,
        available: String,
        needed: String,
    },
    /// Conflicting transactions on the same budget did not clear in time (retryable).
    #[error("budget busy: {0}")]
    Contended(String),
    #[error("budget store: {0}")]
    Backend(String),
    /// A USD budget applies and the call's cost cannot be known.
    #[error("{scope} has a USD budget and this model has no price")]
    Unpriced { scope: String },
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

/// One conditional reservation on an account: update expression, condition and values.
fn reservation_update(
    hold: &Hold,
    now: DateTime<Utc>,
) -> (String, String, HashMap<String, AttributeValue>) {
    let mut sets = Vec::new();
    let mut conditions = Vec::new();
    let mut values = HashMap::from([
        (":yes".to_owned(), AttributeValue::Bool(true)),
        (":zero".to_owned(), n(0)),
    ]);
    if let (Some(limit), Some(usd)) = (hold.limits.monthly_usd, hold.usd) {
        sets.push("available_usd = if_not_exists(available_usd, :limit_usd) - :usd, reserved_usd = if_not_exists(reserved_usd, :zero) + :usd");
        conditions.push(
            "((attribute_not_exists(available_usd) AND :fits_usd = :yes) OR available_usd >= :usd)",
        );
        values.insert(":limit_usd".into(), n(limit));
        values.insert(":usd".into(), n(usd));
        values.insert(":fits_usd".into(), AttributeValue::Bool(limit >= usd));
    }
    if let (Some(limit), Some(tokens)) = (hold.limits.monthly_tokens, hold.tokens) {
        sets.push("available_tokens = if_not_exists(available_tokens, :limit_tokens) - :tokens, reserved_tokens = if_not_exists(reserved_tokens, :zero) + :tokens");
        conditions.push("((attribute_not_exists(available_tokens) AND :fits_tokens = :yes) OR available_tokens >= :tokens)");
        values.insert(":limit_tokens".into(), n(limit));
        values.insert(":tokens".into(), n(tokens));
        values.insert(":fits_tokens".into(), AttributeValue::Bool(limit >= tokens));
    }
    if matches!(hold.scope, Scope::Execution(_)) {
        sets.push("expires_at = :expires");
        values.insert(
            ":expires".into(),
            n(now.timestamp() + EXECUTION_ACCOUNT_TTL_SECS),
        );
    }
    (
        format!("SET {}", sets.join(", ")),
        conditions.join(" AND "),
        values,
    )
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

    /// The monthly limits of the tenant or of one workflow (an execution's are in its definition).
    pub async fn config(&self, tenant: &str, scope: &Scope) -> Result<BudgetConfig, BudgetError> {
        let Some(sk) = scope.config_sk() else {
            return Ok(BudgetConfig::default());
        };
        Ok(
            crate::aws::get_item(&self.client, &self.table, key(tenant, &sk))
                .await
                .map_err(BudgetError::Backend)?
                .unwrap_or_default(),
        )
    }

    /// The monthly limits of several scopes in one BatchGetItem, in their order.
    async fn configs(
        &self,
        tenant: &str,
        scopes: &[Scope],
    ) -> Result<Vec<BudgetConfig>, BudgetError> {
        let keys = scopes
            .iter()
            .filter_map(Scope::config_sk)
            .map(|sk| key(tenant, &sk))
            .collect();
        // Keys left unprocessed (throttling) are asked again, or a limit would silently not apply.
        let items = crate::aws::batch_get(&self.client, &self.table, keys, true)
            .await
            .map_err(|e| match e {
                crate::aws::BatchGetError::Unprocessed(_) => {
                    BudgetError::Contended("budget limits could not be read (throttled)".into())
                }
                crate::aws::BatchGetError::Backend(e) => BudgetError::Backend(e),
            })?;
        let mut found: HashMap<String, BudgetConfig> = HashMap::new();
        for mut item in items {
            let Some(AttributeValue::S(sk)) = item.remove("sk") else {
                continue;
            };
            let config =
                serde_dynamo::from_item(item).map_err(|e| BudgetError::Backend(e.to_string()))?;
            found.insert(sk, config);
        }
        Ok(scopes
            .iter()
            .map(|s| {
                s.config_sk()
                    .and_then(|sk| found.remove(&sk))
                    .unwrap_or_default()
            })
            .collect())
    }

    /// What the scope has spent, holds and has left: this month, or for an execution, in all.
    pub async fn usage(
        &self,
        tenant: &str,
        scope: &Scope,
        at: DateTime<Utc>,
    ) -> Result<PeriodUsage, BudgetError> {
        Ok(crate::aws::get_item(
            &self.client,
            &self.table,
            key(tenant, &scope.account_sk(&period(at))),
        )
        .await
        .map_err(BudgetError::Backend)?
        .unwrap_or_default())
    }

    /// Sets monthly limits; this month's remaining amounts move by the change of each limit.
    /// `month_to_date` is what the scope spent this month before (from the usage ledger): a
    /// month's account opened by this call starts from it, not from zero.
    pub async fn set(
        &self,
        tenant: &str,
        scope: &Scope,
        config: &BudgetConfig,
        at: DateTime<Utc>,
        month_to_date: (f64, u64),
    ) -> Result<(), BudgetError> {
        let Some(sk) = scope.config_sk() else {
            return Err(BudgetError::Backend(
                "an execution's budget is set by its workflow definition".into(),
            ));
        };
        let old = self.config(tenant, scope).await?;
        let period_key = key(tenant, &scope.account_sk(&period(at)));
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
            // Only an amount that exists moves (a month not opened yet opens below).
            self.update_account(
                &period_key,
                format!("SET {attr} = {attr} + :d"),
                Some(format!("attribute_exists({attr})")),
                HashMap::from([(":d".to_owned(), AttributeValue::N(delta))]),
            )
            .await?;
        }
        // A limit set again after it was cleared: while there was none, spending did not move
        // what is available, so it is worked out afresh from what was spent and is reserved.
        // The account's `spent` did not move either, so the ledger's month-to-date counts.
        if let (Some(limit), None) = (config.monthly_usd, old.monthly_usd) {
            self.recompute_available(&period_key, "usd", limit, month_to_date.0)
                .await?;
        }
        if let (Some(limit), None) = (config.monthly_tokens, old.monthly_tokens) {
            self.recompute_available(&period_key, "tokens", limit as f64, month_to_date.1 as f64)
                .await?;
        }
        // After the deltas (which move only amounts that exist): a month without an account
        // yet opens at what it already spent. The limits are stored last, so no reservation
        // opens the account from the full new limit in between.
        self.open_period(&period_key, config, month_to_date).await?;
        let mut item: HashMap<String, AttributeValue> =
            serde_dynamo::to_item(config).map_err(|e| BudgetError::Backend(e.to_string()))?;
        item.extend(key(tenant, &sk));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// `available_<what> = limit - spent - reserved` on an account that has an `available`
    /// amount, written only if spent and reserved did not move meanwhile (else read again).
    async fn recompute_available(
        &self,
        period_key: &HashMap<String, AttributeValue>,
        what: &str,
        limit: f64,
        ledger_spent: f64,
    ) -> Result<(), BudgetError> {
        let (available, spent, reserved) = (
            format!("available_{what}"),
            format!("spent_{what}"),
            format!("reserved_{what}"),
        );
        let number = |item: &HashMap<String, AttributeValue>, attr: &str| {
            item.get(attr)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        for _ in 0..crate::aws::transact::CONFLICT_ATTEMPTS {
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(period_key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(backend)?
                .item
                .unwrap_or_default();
            if !item.contains_key(&available) {
                return Ok(()); // opened from the limit by `open_period`
            }
            let spent_now = number(&item, &spent).max(ledger_spent);
            let fresh = limit - spent_now - number(&item, &reserved);
            let text = |v: f64| {
                if what == "tokens" {
                    (v.round() as i64).to_string()
                } else {
                    v.to_string()
                }
            };
            // The condition compares the very numbers read (their stored text).
            let mut values = HashMap::from([
                (":fresh".to_owned(), AttributeValue::N(text(fresh))),
                (":spent_now".to_owned(), AttributeValue::N(text(spent_now))),
            ]);
            let mut conditions = Vec::new();
            for (attr, name) in [(&spent, ":spent"), (&reserved, ":reserved")] {
                match item.get(attr.as_str()) {
                    Some(v) => {
                        conditions.push(format!("{attr} = {name}"));
                        values.insert(name.to_owned(), v.clone());
                    }
                    None => conditions.push(format!("attribute_not_exists({attr})")),
                }
            }
            let written = self
                .update_account(
                    period_key,
                    format!("SET {available} = :fresh, {spent} = :spent_now"),
                    Some(conditions.join(" AND ")),
                    values,
                )
                .await?;
            if written {
                return Ok(());
            }
        }
        Err(BudgetError::Backend(
            "the month's account kept changing while its limit was set; try again".into(),
        ))
    }

    /// Opens this month's account (if it has none yet) at what the month already spent, so the
    /// first reservation does not start from the full limit. Amounts that exist stay.
    async fn open_period(
        &self,
        period_key: &HashMap<String, AttributeValue>,
        config: &BudgetConfig,
        (spent_usd, spent_tokens): (f64, u64),
    ) -> Result<(), BudgetError> {
        let mut sets = vec![
            "spent_usd = if_not_exists(spent_usd, :su)",
            "spent_tokens = if_not_exists(spent_tokens, :st)",
        ];
        let mut values = HashMap::from([
            (":su".to_owned(), n(spent_usd)),
            (":st".to_owned(), n(spent_tokens)),
        ]);
        if let Some(limit) = config.monthly_usd {
            sets.push("available_usd = if_not_exists(available_usd, :au)");
            values.insert(":au".into(), n(limit - spent_usd));
        }
        if let Some(limit) = config.monthly_tokens {
            sets.push("available_tokens = if_not_exists(available_tokens, :at)");
            values.insert(":at".into(), n(limit as i128 - spent_tokens as i128));
        }
        self.update_account(period_key, format!("SET {}", sets.join(", ")), None, values)
            .await
            .map(|_| ())
    }

    /// One UpdateItem on a budget account, retried while a reservation's transaction holds the
    /// item; `false` when `condition` does not hold.
    async fn update_account(
        &self,
        key: &HashMap<String, AttributeValue>,
        update: String,
        condition: Option<String>,
        values: HashMap<String, AttributeValue>,
    ) -> Result<bool, BudgetError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(update.clone())
                .set_condition_expression(condition.clone())
                .set_expression_attribute_values(Some(values.clone()))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(true),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => return Ok(false),
                Err(e)
                    if e.code() == Some("TransactionConflictException")
                        && attempt < crate::aws::transact::CONFLICT_ATTEMPTS =>
                {
                    tokio::time::sleep(crate::aws::transact::pause(attempt)).await
                }
                Err(e) => return Err(backend(e)),
            }
        }
    }

    /// Holds `usd` and `tokens` on every budget that applies to the spender, atomically; `None`
    /// when no budget applies.
    pub async fn reserve(
        &self,
        who: &Spender<'_>,
        attempt: &str,
        at: DateTime<Utc>,
        usd: Option<f64>,
        tokens: u64,
    ) -> Result<Option<Reservation>, BudgetError> {
        let period = period(at);
        let mut scopes = vec![Scope::Tenant];
        if let Some(w) = who.workflow_id {
            scopes.push(Scope::Workflow(w.to_owned()));
        }
        let configs = self.configs(who.tenant, &scopes).await?;
        let mut scopes: Vec<(Scope, BudgetConfig)> = scopes.into_iter().zip(configs).collect();
        if let Some(e) = who.execution_id {
            scopes.push((Scope::Execution(e.to_owned()), who.execution_max.clone()));
        }
        let holds: Vec<Hold> = scopes
            .into_iter()
            .filter(|(_, limits)| limits.is_set())
            .map(|(scope, limits)| Hold {
                sk: scope.account_sk(&period),
                usd: limits.monthly_usd.map(|_| 0.0),
                tokens: limits.monthly_tokens.map(|_| tokens),
                scope,
                limits,
            })
            .collect();
        if holds.is_empty() {
            return Ok(None);
        }
        // A model without a price would spend dollars the budget never sees.
        if usd.is_none() {
            if let Some(h) = holds.iter().find(|h| h.limits.monthly_usd.is_some()) {
                return Err(BudgetError::Unpriced {
                    scope: h.scope.describe(),
                });
            }
        }
        let usd = usd.unwrap_or(0.0);
        let holds: Vec<Hold> = holds
            .into_iter()
            .map(|h| Hold {
                usd: h.usd.map(|_| usd),
                ..h
            })
            .collect();
        let reservation = Reservation {
            tenant: who.tenant.to_owned(),
            attempt: attempt.to_owned(),
            period,
            holds,
            execution_id: who.execution_id.map(str::to_owned),
        };
        let mut items = Vec::new();
        for hold in &reservation.holds {
            let (update, condition, values) = reservation_update(hold, at);
            let update = aws_sdk_dynamodb::types::Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(who.tenant, &hold.sk)))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(|e| BudgetError::Backend(e.to_string()))?;
            items.push(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .update(update)
                    .build(),
            );
        }
        let mut record = key(who.tenant, &format!("HOLD#{attempt}"));
        record.insert(
            "reservation".into(),
            s(serde_json::to_string(&reservation)
                .map_err(|e| BudgetError::Backend(e.to_string()))?),
        );
        record.insert(
            "expires_at".into(),
            n(at.timestamp() + EXECUTION_ACCOUNT_TTL_SECS),
        );
        record.insert("hold_shard".into(), s(hold_shard(attempt)));
        record.insert("held_at".into(), n(at.timestamp()));
        items.push(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .put(
                    aws_sdk_dynamodb::types::Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(record))
                        .condition_expression("attribute_not_exists(sk)")
                        .build()
                        .map_err(|e| BudgetError::Backend(e.to_string()))?,
                )
                .build(),
        );
        let record_index = items.len() - 1;
        // A failed condition means a budget was short when checked; a settlement in between may
        // have made room since, so a refusal is re-read and, where room appeared, tried again.
        for _ in 0..RESERVE_ROUNDS {
            match crate::aws::transact::write(&self.client, items.clone()).await {
                Ok(()) => return Ok(Some(reservation)),
                Err(TransactError::Cancelled(c)) if c.failed(record_index) => {
                    return Err(BudgetError::Backend(format!(
                        "attempt {attempt} already holds a reservation"
                    )))
                }
                Err(TransactError::Cancelled(c)) if c.any_failed() => {
                    if let Some(short) = self
                        .exceeded(who.tenant, &reservation.holds, at, usd, tokens)
                        .await?
                    {
                        return Err(short);
                    }
                }
                Err(TransactError::Cancelled(c)) => {
                    return Err(BudgetError::Contended(format!("{:?}", c.reasons)))
                }
                Err(TransactError::Other(e)) => return Err(BudgetError::Backend(e)),
            }
        }
        // DynamoDB refused each time though the re-read (in binary floating point) showed room:
        // the exact decimal amount left is short by less than a rounding step.
        Err(BudgetError::Exceeded {
            scope: "a budget".into(),
            available: "less than this call needs".into(),
            needed: format!("{usd:.6} USD / {tokens} tokens"),
        })
    }

    /// Names the first budget without room for the call (read after the refusal); `None` when
    /// every budget has room again.
    async fn exceeded(
        &self,
        tenant: &str,
        holds: &[Hold],
        at: DateTime<Utc>,
        usd: f64,
        tokens: u64,
    ) -> Result<Option<BudgetError>, BudgetError> {
        let needed = format!("{usd:.6} USD / {tokens} tokens");
        for hold in holds {
            let left = self.usage(tenant, &hold.scope, at).await?;
            let usd_left = left.available_usd.or(hold.limits.monthly_usd);
            let tokens_left = left.available_tokens.or(hold
                .limits
                .monthly_tokens
                .map(|t| t.min(i64::MAX as u64) as i64));
            let short_usd = hold.usd.is_some() && usd_left.is_some_and(|a| a < usd);
            let short_tokens =
                hold.tokens.is_some() && tokens_left.is_some_and(|a| (a as i128) < tokens as i128);
            if short_usd || short_tokens {
                return Ok(Some(BudgetError::Exceeded {
                    scope: hold.scope.describe(),
                    available: if short_usd {
                        format!("{:.6} USD", usd_left.unwrap_or_default())
                    } else {
                        format!("{} tokens", tokens_left.unwrap_or_default())
                    },
                    needed,
                }));
            }
        }
        // Another call settled in between: there is room now.
        Ok(None)
    }

    /// Replaces the reservation by what was actually spent (zero when the call failed), at most
    /// once: the accounts change in the same transaction that deletes the reservation's record.
    pub async fn settle(
        &self,
        r: &Reservation,
        spent_usd: f64,
        spent_tokens: u64,
    ) -> Result<(), BudgetError> {
        let mut items = Vec::new();
        for hold in &r.holds {
            let mut sets = Vec::new();
            let mut values = HashMap::from([(":zero".to_owned(), n(0))]);
            if let Some(usd) = hold.usd {
                sets.push("available_usd = available_usd + :refund_usd, reserved_usd = reserved_usd - :usd, spent_usd = if_not_exists(spent_usd, :zero) + :spent_usd");
                values.insert(":refund_usd".into(), n(usd - spent_usd));
                values.insert(":usd".into(), n(usd));
                values.insert(":spent_usd".into(), n(spent_usd));
            }
            if let Some(tokens) = hold.tokens {
                sets.push("available_tokens = available_tokens + :refund_tokens, reserved_tokens = reserved_tokens - :tokens, spent_tokens = if_not_exists(spent_tokens, :zero) + :spent_tokens");
                values.insert(
                    ":refund_tokens".into(),
                    n(tokens as i128 - spent_tokens as i128),
                );
                values.insert(":tokens".into(), n(tokens));
                values.insert(":spent_tokens".into(), n(spent_tokens));
            }
            let update = aws_sdk_dynamodb::types::Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(&r.tenant, &hold.sk)))
                .update_expression(format!("SET {}", sets.join(", ")))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(|e| BudgetError::Backend(e.to_string()))?;
            items.push(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .update(update)
                    .build(),
            );
        }
        items.push(
            aws_sdk_dynamodb::types::TransactWriteItem::builder()
                .delete(
                    aws_sdk_dynamodb::types::Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(&r.tenant, &format!("HOLD#{}", r.attempt))))
                        .condition_expression("attribute_exists(sk)")
                        .build()
                        .map_err(|e| BudgetError::Backend(e.to_string()))?,
                )
                .build(),
        );
        let record_index = items.len() - 1;
        match crate::aws::transact::write(&self.client, items).await {
            Ok(()) => {}
            // Settled before (its record is gone): nothing to do twice.
            Err(TransactError::Cancelled(c)) if c.failed(record_index) => return Ok(()),
            // Still held: the sweep settles it later from the step's recorded outcome.
            Err(e) => return Err(BudgetError::Backend(format!("settlement not written: {e}"))),
        }
        for hold in &r.holds {
            if matches!(hold.scope, Scope::Execution(_)) || self.alerts.is_none() {
                continue;
            }
            let usage: Option<PeriodUsage> =
                crate::aws::get_item(&self.client, &self.table, key(&r.tenant, &hold.sk))
                    .await
                    .map_err(BudgetError::Backend)?;
            self.announce(r, hold, &usage.unwrap_or_default()).await?;
        }
        Ok(())
    }

    /// Releases what a step attempt still holds (its worker stopped between reservation and
    /// settlement); `false` when it holds nothing. The provider may or may not have been called:
    /// nothing is counted as spent, since no usage was ever reported.
    pub async fn release(&self, tenant: &str, attempt: &str) -> Result<bool, BudgetError> {
        let Some(reservation) = self.held(tenant, attempt).await? else {
            return Ok(false);
        };
        self.settle(&reservation, 0.0, 0).await?;
        Ok(true)
    }

    /// The reservation an attempt still holds, if any.
    pub async fn held(
        &self,
        tenant: &str,
        attempt: &str,
    ) -> Result<Option<Reservation>, BudgetError> {
        #[derive(Deserialize)]
        struct Record {
            reservation: String,
        }
        let record: Option<Record> = crate::aws::get_item(
            &self.client,
            &self.table,
            key(tenant, &format!("HOLD#{attempt}")),
        )
        .await
        .map_err(BudgetError::Backend)?;
        record
            .map(|r| {
                serde_json::from_str(&r.reservation)
                    .map_err(|e| BudgetError::Backend(format!("unreadable reservation: {e}")))
            })
            .transpose()
    }

    /// Reservations made before `before` that are still held, as (tenant, attempt), at most
    /// `limit` per shard, oldest first.
    pub async fn held_before(
        &self,
        before: DateTime<Utc>,
        limit: i32,
    ) -> Result<Vec<(String, String)>, BudgetError> {
        let mut found = Vec::new();
        for shard in 0..HOLD_SHARDS {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(HOLDS_INDEX)
                .key_condition_expression("hold_shard = :shard AND held_at < :before")
                .expression_attribute_values(":shard", s(format!("HOLD#{shard}")))
                .expression_attribute_values(":before", n(before.timestamp()))
                .limit(limit)
                .send()
                .await
                .map_err(backend)?;
            for item in page.items.unwrap_or_default() {
                let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
                    (item.get("pk"), item.get("sk"))
                else {
                    continue;
                };
                if let (Some(tenant), Some(attempt)) =
                    (pk.strip_suffix("#BUDGET"), sk.strip_prefix("HOLD#"))
                {
                    found.push((tenant.to_owned(), attempt.to_owned()));
                }
            }
        }
        Ok(found)
    }

    /// Each threshold a month's spend has reached becomes one event (idempotent per period,
    /// budget and threshold, so it is announced once however often it is re-checked) and one
    /// metric.
    async fn announce(
        &self,
        r: &Reservation,
        hold: &Hold,
        usage: &PeriodUsage,
    ) -> Result<(), BudgetError> {
        let Some(store) = &self.alerts else {
            return Ok(());
        };
        let (scope, workflow_id, key_prefix) = match &hold.scope {
            Scope::Workflow(w) => ("workflow", Some(w.as_str()), format!("workflow-{w}-")),
            _ => ("tenant", None, String::new()),
        };
        let shares = [
            (
                "usd",
                hold.limits
                    .monthly_usd
                    .filter(|l| *l > 0.0)
                    .map(|l| usage.spent_usd / l),
            ),
            (
                "tokens",
                hold.limits
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
                    "period": r.period, "scope": scope, "workflow_id": workflow_id,
                    "unit": unit, "threshold_percent": threshold,
                    "spent_usd": usage.spent_usd, "spent_tokens": usage.spent_tokens,
                    "monthly_usd": hold.limits.monthly_usd, "monthly_tokens": hold.limits.monthly_tokens,
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
                        idempotency_key: Some(format!("threshold-{key_prefix}{unit}-{threshold}")),
                    })
                    .await;
                match appended {
                    Ok(a) if !a.replayed => crate::telemetry::metrics::emit(
                        "budget_threshold_crossed",
                        threshold as f64,
                        crate::telemetry::metrics::Unit::Count,
                        &[("tenant", &r.tenant), ("scope", scope), ("unit", unit)],
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
