//! Money: usage reports, budgets (tenant and per workflow) and prices.

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::auth::Claims;
use crate::engine::budget::{period, BudgetConfig, Budgets, Scope};
use crate::engine::prices::{Price, Prices};
use crate::executions::usage::{totals, GroupBy, Total, UsageLedger, MAX_DAYS};
use crate::http::{ApiError, ApiResult};
use crate::workflows::WorkflowStore;

use super::users::require_admin;

/// The largest monthly limits: far above any real spend, and within what the accounts' signed
/// 64-bit amounts hold.
pub const MAX_BUDGET_USD: f64 = 1e9;
pub const MAX_BUDGET_TOKENS: u64 = 1_000_000_000_000_000;
/// No model costs more than this per million tokens (a typo of 1e308 would make every cost
/// infinite).
pub const MAX_USD_PER_MTOK: f64 = 10_000.0;

/// What the money services read and write.
#[derive(Clone)]
pub struct Money {
    pub budgets: Budgets,
    pub ledger: UsageLedger,
    pub workflows: WorkflowStore,
    pub prices: Prices,
}

impl Money {
    pub fn new(client: aws_sdk_dynamodb::Client, state_table: String) -> Self {
        Self {
            budgets: Budgets::new(client.clone(), state_table.clone()),
            ledger: UsageLedger::new(client.clone(), state_table.clone()),
            workflows: WorkflowStore::new(client.clone(), state_table.clone()),
            prices: Prices::new(client, state_table),
        }
    }
}

/// A budget as the API shows it: the limits, and this month's spend, reservations and what is
/// left. Only a limit that is set has an amount available.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetView {
    pub tenant: String,
    pub period: String,
    pub monthly_usd: Option<f64>,
    pub monthly_tokens: Option<u64>,
    pub spent_usd: f64,
    pub spent_tokens: u64,
    pub reserved_usd: f64,
    pub reserved_tokens: u64,
    pub available_usd: Option<f64>,
    pub available_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
}

/// A workflow of this tenant (another tenant's is not found, like everywhere else).
async fn scope(m: &Money, tenant: &str, workflow: Option<&str>) -> ApiResult<Scope> {
    let Some(id) = workflow else {
        return Ok(Scope::Tenant);
    };
    match m.workflows.get(tenant, id).await {
        Ok(_) => Ok(Scope::Workflow(id.to_owned())),
        Err(crate::workflows::WorkflowError::Backend(e)) => Err(ApiError::internal(e)),
        Err(_) => Err(ApiError::not_found(format!("no workflow {id}"))),
    }
}

async fn view(m: &Money, tenant: &str, scope: &Scope) -> ApiResult<BudgetView> {
    let now = chrono::Utc::now();
    let config = m
        .budgets
        .config(tenant, scope)
        .await
        .map_err(ApiError::internal)?;
    let usage = m
        .budgets
        .usage(tenant, scope, now)
        .await
        .map_err(ApiError::internal)?;
    Ok(BudgetView {
        tenant: tenant.to_owned(),
        period: period(now),
        monthly_usd: config.monthly_usd,
        monthly_tokens: config.monthly_tokens,
        spent_usd: usage.spent_usd,
        spent_tokens: usage.spent_tokens,
        reserved_usd: usage.reserved_usd,
        reserved_tokens: usage.reserved_tokens,
        available_usd: config
            .monthly_usd
            .and(usage.available_usd.or(config.monthly_usd)),
        available_tokens: config.monthly_tokens.and(
            usage
                .available_tokens
                .or(config.monthly_tokens.map(|t| t.min(i64::MAX as u64) as i64)),
        ),
        workflow_id: match scope {
            Scope::Workflow(id) => Some(id.clone()),
            _ => None,
        },
    })
}

/// The tenant's budget, or one of its workflows' (admins only).
pub async fn budget(m: &Money, claims: &Claims, workflow: Option<&str>) -> ApiResult<BudgetView> {
    require_admin(claims)?;
    let scope = scope(m, &claims.tenant, workflow).await?;
    view(m, &claims.tenant, &scope).await
}

/// Sets (or, with `None`, clears) the monthly limits of the tenant or one workflow (admins
/// only). A budget set in the middle of a month starts from what the month already spent.
pub async fn set_budget(
    m: &Money,
    claims: &Claims,
    workflow: Option<&str>,
    monthly_usd: Option<f64>,
    monthly_tokens: Option<u64>,
) -> ApiResult<BudgetView> {
    require_admin(claims)?;
    let tenant = &claims.tenant;
    let scope = scope(m, tenant, workflow).await?;
    if monthly_usd.is_some_and(|v| !(v.is_finite() && (0.0..=MAX_BUDGET_USD).contains(&v))) {
        return Err(ApiError::unprocessable(
            "invalid-budget",
            format!("`monthly_usd` is a number from 0 to {MAX_BUDGET_USD}"),
        ));
    }
    if monthly_tokens.is_some_and(|t| t > MAX_BUDGET_TOKENS) {
        return Err(ApiError::unprocessable(
            "invalid-budget",
            format!("`monthly_tokens` is at most {MAX_BUDGET_TOKENS}"),
        ));
    }
    let config = BudgetConfig {
        monthly_usd,
        monthly_tokens,
    };
    let now = chrono::Utc::now();
    let first = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    let records = m
        .ledger
        .between(tenant, first, now.date_naive())
        .await
        .map_err(ApiError::internal)?;
    let (spent_usd, spent_tokens) = records
        .iter()
        .filter(|r| match &scope {
            Scope::Workflow(w) => &r.workflow_id == w,
            _ => true,
        })
        .fold((0.0, 0u64), |(usd, tokens), r| {
            (usd + r.cost_usd, tokens + r.input_tokens + r.output_tokens)
        });
    m.budgets
        .set(tenant, &scope, &config, now, (spent_usd, spent_tokens))
        .await
        .map_err(ApiError::internal)?;
    view(m, tenant, &scope).await
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub steps: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub group_by: String,
    pub groups: Vec<Total>,
    pub total: Totals,
}

fn day(name: &str, value: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(
            "invalid-query",
            format!("`{name}` is a date like 2026-11-25"),
        )
    })
}

/// The tenant's usage: totals per group (day, month, workflow or model) over `from..=to`
/// (default: this month so far), at most [`MAX_DAYS`] days.
pub async fn report(
    m: &Money,
    claims: &Claims,
    from: Option<&str>,
    to: Option<&str>,
    group_by: Option<&str>,
) -> ApiResult<Report> {
    let today = chrono::Utc::now().date_naive();
    let from = match from {
        Some(v) => day("from", v)?,
        None => today.with_day0(0).unwrap_or(today),
    };
    let to = match to {
        Some(v) => day("to", v)?,
        None => today,
    };
    if to < from || (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("`from` must not be after `to`, and a report covers at most {MAX_DAYS} days"),
        ));
    }
    let by = match group_by {
        None => GroupBy::Day,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            ApiError::bad_request(
                "invalid-query",
                "`group_by` is day, month, workflow or model",
            )
        })?,
    };
    let records = m
        .ledger
        .between(&claims.tenant, from, to)
        .await
        .map_err(ApiError::internal)?;
    let total = totals(&records, GroupBy::Month).into_iter().fold(
        Totals {
            steps: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
        },
        |a, t| Totals {
            steps: a.steps + t.steps,
            input_tokens: a.input_tokens + t.input_tokens,
            output_tokens: a.output_tokens + t.output_tokens,
            cost_usd: a.cost_usd + t.cost_usd,
        },
    );
    Ok(Report {
        from: from.to_string(),
        to: to.to_string(),
        group_by: group_by.unwrap_or("day").to_owned(),
        groups: totals(&records, by),
        total,
    })
}

/// What the tenant pays per model: list prices, or its own.
pub async fn prices(m: &Money, claims: &Claims) -> ApiResult<Vec<Price>> {
    m.prices
        .list(&claims.tenant)
        .await
        .map_err(ApiError::internal)
}

fn checked_model(provider: &str, model: &str) -> ApiResult<()> {
    if !crate::domain::definition::LLM_PROVIDERS.contains(&provider) {
        return Err(ApiError::unprocessable(
            "invalid-price",
            format!(
                "unknown provider `{provider}`; use one of {}",
                crate::domain::definition::LLM_PROVIDERS.join(", ")
            ),
        ));
    }
    if model.trim().is_empty() || model.len() > 200 {
        return Err(ApiError::unprocessable(
            "invalid-price",
            "a model name is 1-200 characters",
        ));
    }
    Ok(())
}

/// Sets what this tenant pays for a model (per million tokens; admins only); other tenants
/// keep theirs. Below the list price only with the operator's `billing` role.
pub async fn set_price(
    m: &Money,
    claims: &Claims,
    provider: &str,
    model: &str,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
) -> ApiResult<Price> {
    require_admin(claims)?;
    checked_model(provider, model)?;
    for (name, v) in [
        ("input_usd_per_mtok", input_usd_per_mtok),
        ("output_usd_per_mtok", output_usd_per_mtok),
    ] {
        if !(v.is_finite() && (0.0..=MAX_USD_PER_MTOK).contains(&v)) {
            return Err(ApiError::unprocessable(
                "invalid-price",
                format!("`{name}` is a number from 0 to {MAX_USD_PER_MTOK}"),
            ));
        }
    }
    let list = m
        .prices
        .list_price(provider, model)
        .await
        .map_err(ApiError::internal)?;
    let below_list = list.is_some_and(|l| {
        input_usd_per_mtok < l.input_usd_per_mtok || output_usd_per_mtok < l.output_usd_per_mtok
    });
    if below_list && !claims.has_role("billing") {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "price-below-list",
            "Forbidden",
            format!(
                "{provider}/{model} would cost less than its list price; only the operator's billing role may set that"
            ),
        ));
    }
    let price = Price {
        provider: provider.to_owned(),
        model: model.to_owned(),
        input_usd_per_mtok,
        output_usd_per_mtok,
        source: "tenant".into(),
        updated_at: None,
    };
    m.prices
        .set_override(&claims.tenant, &price, chrono::Utc::now())
        .await
        .map_err(ApiError::internal)
}

/// Back to the list price for this tenant (admins only).
pub async fn remove_price(
    m: &Money,
    claims: &Claims,
    provider: &str,
    model: &str,
) -> ApiResult<()> {
    require_admin(claims)?;
    if m.prices
        .remove_override(&claims.tenant, provider, model)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "this tenant has no price of its own for {provider}/{model}"
        )))
    }
}
