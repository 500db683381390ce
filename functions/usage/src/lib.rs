//! The usage function: `GET /usage` (tokens and cost over a range of days, grouped by day, month,
//! workflow or model), `GET /budgets` (the tenant's limits and this month's spend, reserved and
//! available amounts) and `PUT /budgets` (set the monthly limits; admin only); the same for one
//! workflow under `/budgets/workflows/{id}`. Budgets are enforced by the worker before each `llm`
//! call (shared::engine::budget), together with each execution's own maximum (its definition's
//! `budget`). `GET /prices` lists what the tenant pays per model (list prices from the price
//! table, or its own); admins set or remove the tenant's own price per model with
//! `PUT`/`DELETE /prices/{provider}/{model}`.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::routing::get;
use axum::Router;
use chrono::Datelike;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::engine::budget::{period, BudgetConfig, Budgets, Scope};
use shared::engine::prices::{Price, Prices};
use shared::executions::usage::{totals, GroupBy, UsageLedger, MAX_DAYS};
use shared::http::{Admin, ApiError, ApiResult, Authenticated, Json};

#[derive(Clone)]
pub struct UsageState {
    pub budgets: Budgets,
    pub ledger: UsageLedger,
    pub workflows: shared::workflows::WorkflowStore,
    pub prices: Prices,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<UsageState> for Arc<JwtKeys> {
    fn from_ref(state: &UsageState) -> Self {
        state.keys.clone()
    }
}

pub async fn app(
    config: &shared::config::Config,
    sdk: &shared::aws::SdkConfig,
) -> Result<Router, String> {
    let (keys, limiter) = shared::http::authenticated(config, sdk).await?;
    let tables = config.tables().map_err(|e| e.to_string())?;
    let state = UsageState {
        budgets: Budgets::new(shared::aws::dynamodb(sdk), tables.state.clone()),
        ledger: UsageLedger::new(shared::aws::dynamodb(sdk), tables.state.clone()),
        workflows: shared::workflows::WorkflowStore::new(
            shared::aws::dynamodb(sdk),
            tables.state.clone(),
        ),
        prices: Prices::new(shared::aws::dynamodb(sdk), tables.state),
        keys,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: UsageState) -> Router {
    Router::new()
        .route("/budgets", get(read).put(set))
        .route(
            "/budgets/workflows/{id}",
            get(read_workflow).put(set_workflow),
        )
        .route("/usage", get(report))
        .route("/prices", get(prices))
        .route(
            "/prices/{provider}/{model}",
            axum::routing::put(set_price).delete(remove_price),
        )
        .with_state(state)
}

async fn budget_view(s: &UsageState, tenant: &str, scope: &Scope) -> ApiResult<Value> {
    let now = chrono::Utc::now();
    let config = s
        .budgets
        .config(tenant, scope)
        .await
        .map_err(ApiError::internal)?;
    let usage = s
        .budgets
        .usage(tenant, scope, now)
        .await
        .map_err(ApiError::internal)?;
    let mut view = json!({
        "tenant": tenant,
        "period": period(now),
        "monthly_usd": config.monthly_usd,
        "monthly_tokens": config.monthly_tokens,
        "spent_usd": usage.spent_usd,
        "spent_tokens": usage.spent_tokens,
        "reserved_usd": usage.reserved_usd,
        "reserved_tokens": usage.reserved_tokens,
        // Only a limit that is set has an amount available (a cleared one shows none).
        "available_usd": config.monthly_usd.and(usage.available_usd.or(config.monthly_usd)),
        "available_tokens": config.monthly_tokens.and(
            usage
                .available_tokens
                .or(config.monthly_tokens.map(|t| t.min(i64::MAX as u64) as i64))
        ),
    });
    if let Scope::Workflow(id) = scope {
        view["workflow_id"] = json!(id);
    }
    Ok(view)
}

async fn read(State(s): State<UsageState>, Admin(claims): Admin) -> ApiResult<Json<Value>> {
    Ok(Json(budget_view(&s, &claims.tenant, &Scope::Tenant).await?))
}

async fn read_workflow(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let scope = workflow_scope(&s, &claims.tenant, id).await?;
    Ok(Json(budget_view(&s, &claims.tenant, &scope).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBudget {
    monthly_usd: Option<f64>,
    monthly_tokens: Option<u64>,
}

async fn set(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Json(req): Json<SetBudget>,
) -> ApiResult<Json<Value>> {
    store(&s, &claims.tenant, &Scope::Tenant, req).await
}

async fn set_workflow(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path(id): Path<String>,
    Json(req): Json<SetBudget>,
) -> ApiResult<Json<Value>> {
    let scope = workflow_scope(&s, &claims.tenant, id).await?;
    store(&s, &claims.tenant, &scope, req).await
}

/// A workflow of this tenant (another tenant's is not found, like everywhere else).
async fn workflow_scope(s: &UsageState, tenant: &str, id: String) -> ApiResult<Scope> {
    match s.workflows.get(tenant, &id).await {
        Ok(_) => Ok(Scope::Workflow(id)),
        Err(shared::workflows::WorkflowError::Backend(e)) => Err(ApiError::internal(e)),
        Err(_) => Err(ApiError::not_found(format!("no workflow {id}"))),
    }
}

/// The largest monthly limits: far above any real spend, and within what the accounts' signed
/// 64-bit amounts hold.
const MAX_BUDGET_USD: f64 = 1e9;
const MAX_BUDGET_TOKENS: u64 = 1_000_000_000_000_000;

async fn store(
    s: &UsageState,
    tenant: &str,
    scope: &Scope,
    req: SetBudget,
) -> ApiResult<Json<Value>> {
    if req
        .monthly_usd
        .is_some_and(|v| !(v.is_finite() && (0.0..=MAX_BUDGET_USD).contains(&v)))
    {
        return Err(ApiError::unprocessable(
            "invalid-budget",
            format!("`monthly_usd` is a number from 0 to {MAX_BUDGET_USD}"),
        ));
    }
    if req.monthly_tokens.is_some_and(|t| t > MAX_BUDGET_TOKENS) {
        return Err(ApiError::unprocessable(
            "invalid-budget",
            format!("`monthly_tokens` is at most {MAX_BUDGET_TOKENS}"),
        ));
    }
    let config = BudgetConfig {
        monthly_usd: req.monthly_usd,
        monthly_tokens: req.monthly_tokens,
    };
    let now = chrono::Utc::now();
    // A budget set in the middle of a month starts from what the month already spent.
    let first = now.date_naive().with_day(1).unwrap_or(now.date_naive());
    let records = s
        .ledger
        .between(tenant, first, now.date_naive())
        .await
        .map_err(ApiError::internal)?;
    let (spent_usd, spent_tokens) = records
        .iter()
        .filter(|r| match scope {
            Scope::Workflow(w) => &r.workflow_id == w,
            _ => true,
        })
        .fold((0.0, 0u64), |(usd, tokens), r| {
            (usd + r.cost_usd, tokens + r.input_tokens + r.output_tokens)
        });
    s.budgets
        .set(tenant, scope, &config, now, (spent_usd, spent_tokens))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(budget_view(s, tenant, scope).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

fn day(name: &str, value: &str) -> ApiResult<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request(
            "invalid-query",
            format!("`{name}` is a date like 2026-11-25"),
        )
    })
}

/// The tenant's usage: totals per group over `from`..=`to` (default: this month so far).
async fn report(
    State(s): State<UsageState>,
    Authenticated(claims): Authenticated,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    let today = chrono::Utc::now().date_naive();
    let from = match &q.from {
        Some(v) => day("from", v)?,
        None => today.with_day0(0).unwrap_or(today),
    };
    let to = match &q.to {
        Some(v) => day("to", v)?,
        None => today,
    };
    if to < from || (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("`from` must not be after `to`, and a report covers at most {MAX_DAYS} days"),
        ));
    }
    let by = match q.group_by.as_deref() {
        None => GroupBy::Day,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            ApiError::bad_request(
                "invalid-query",
                "`group_by` is day, month, workflow or model",
            )
        })?,
    };
    let records = s
        .ledger
        .between(&claims.tenant, from, to)
        .await
        .map_err(ApiError::internal)?;
    let groups = totals(&records, by);
    let total =
        totals(&records, GroupBy::Month)
            .into_iter()
            .fold((0u64, 0u64, 0u64, 0.0f64), |a, t| {
                (
                    a.0 + t.steps,
                    a.1 + t.input_tokens,
                    a.2 + t.output_tokens,
                    a.3 + t.cost_usd,
                )
            });
    Ok(Json(json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "group_by": q.group_by.unwrap_or_else(|| "day".into()),
        "groups": groups,
        "total": {"steps": total.0, "input_tokens": total.1, "output_tokens": total.2, "cost_usd": total.3},
    })))
}

async fn prices(
    State(s): State<UsageState>,
    Authenticated(claims): Authenticated,
) -> ApiResult<Json<Value>> {
    let prices = s
        .prices
        .list(&claims.tenant)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({"prices": prices})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPrice {
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
}

fn checked_model(provider: &str, model: &str) -> ApiResult<()> {
    if !shared::domain::definition::LLM_PROVIDERS.contains(&provider) {
        return Err(ApiError::unprocessable(
            "invalid-price",
            format!(
                "unknown provider `{provider}`; use one of {}",
                shared::domain::definition::LLM_PROVIDERS.join(", ")
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

/// No model costs more than this per million tokens (a typo of 1e308 would make every cost
/// infinite).
const MAX_USD_PER_MTOK: f64 = 10_000.0;

/// Sets what this tenant pays for a model (per million tokens); other tenants keep theirs.
async fn set_price(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path((provider, model)): Path<(String, String)>,
    Json(req): Json<SetPrice>,
) -> ApiResult<Json<Value>> {
    checked_model(&provider, &model)?;
    for (name, v) in [
        ("input_usd_per_mtok", req.input_usd_per_mtok),
        ("output_usd_per_mtok", req.output_usd_per_mtok),
    ] {
        if !(v.is_finite() && (0.0..=MAX_USD_PER_MTOK).contains(&v)) {
            return Err(ApiError::unprocessable(
                "invalid-price",
                format!("`{name}` is a number from 0 to {MAX_USD_PER_MTOK}"),
            ));
        }
    }
    // A tenant's admin may raise its own price (or price a model that has none), not pay less
    // than list: that takes the operator's `billing` role, which no tenant can grant.
    let list = s
        .prices
        .list_price(&provider, &model)
        .await
        .map_err(ApiError::internal)?;
    let below_list = list.is_some_and(|l| {
        req.input_usd_per_mtok < l.input_usd_per_mtok
            || req.output_usd_per_mtok < l.output_usd_per_mtok
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
        provider,
        model,
        input_usd_per_mtok: req.input_usd_per_mtok,
        output_usd_per_mtok: req.output_usd_per_mtok,
        source: "tenant".into(),
        updated_at: None,
    };
    let stored = s
        .prices
        .set_override(&claims.tenant, &price, chrono::Utc::now())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!(stored)))
}

/// Back to the list price for this tenant.
async fn remove_price(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path((provider, model)): Path<(String, String)>,
) -> ApiResult<axum::http::StatusCode> {
    if s.prices
        .remove_override(&claims.tenant, &provider, &model)
        .await
        .map_err(ApiError::internal)?
    {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "this tenant has no price of its own for {provider}/{model}"
        )))
    }
}
