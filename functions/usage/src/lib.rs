//! The usage function: `GET /budgets` (the tenant's limits and this month's spend, reserved and
//! available amounts) and `PUT /budgets` (set the monthly limits; admin only). Budgets are
//! enforced by the worker before each `llm` call (shared::engine::budget).

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::engine::budget::{period, BudgetConfig, Budgets};
use shared::http::{Admin, ApiError, ApiResult, Json};

#[derive(Clone)]
pub struct UsageState {
    pub budgets: Budgets,
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
        budgets: Budgets::new(shared::aws::dynamodb(sdk), tables.state),
        keys,
    };
    Ok(shared::http::function_layers(router(state), Some(limiter)))
}

pub fn router(state: UsageState) -> Router {
    Router::new()
        .route("/budgets", get(read).put(set))
        .with_state(state)
}

async fn budget_view(s: &UsageState, tenant: &str) -> ApiResult<Value> {
    let now = chrono::Utc::now();
    let config = s.budgets.config(tenant).await.map_err(ApiError::internal)?;
    let usage = s
        .budgets
        .usage(tenant, now)
        .await
        .map_err(ApiError::internal)?;
    Ok(json!({
        "tenant": tenant,
        "period": period(now),
        "monthly_usd": config.monthly_usd,
        "monthly_tokens": config.monthly_tokens,
        "spent_usd": usage.spent_usd,
        "spent_tokens": usage.spent_tokens,
        "reserved_usd": usage.reserved_usd,
        "reserved_tokens": usage.reserved_tokens,
        "available_usd": usage.available_usd.or(config.monthly_usd),
        "available_tokens": usage.available_tokens.or(config.monthly_tokens),
    }))
}

async fn read(State(s): State<UsageState>, Admin(claims): Admin) -> ApiResult<Json<Value>> {
    Ok(Json(budget_view(&s, &claims.tenant).await?))
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
    if req
        .monthly_usd
        .is_some_and(|v| !(v.is_finite() && v >= 0.0))
    {
        return Err(ApiError::unprocessable(
            "invalid-budget",
            "`monthly_usd` is a non-negative number",
        ));
    }
    let config = BudgetConfig {
        monthly_usd: req.monthly_usd,
        monthly_tokens: req.monthly_tokens,
    };
    s.budgets
        .set(&claims.tenant, &config, chrono::Utc::now())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(budget_view(&s, &claims.tenant).await?))
}
