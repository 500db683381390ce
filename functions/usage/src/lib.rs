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
use serde::Deserialize;
use serde_json::{json, Value};
use shared::auth::JwtKeys;
use shared::http::{Admin, ApiError, ApiResult, Authenticated, Json};
use shared::services::usage::{self as service, Money};

#[derive(Clone)]
pub struct UsageState {
    pub money: Money,
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
    let clients = shared::aws::Clients::new(sdk);
    let (keys, limiter) = shared::http::authenticated(config, &clients).await?;
    let tables = config.tables().map_err(|e| e.to_string())?;
    let state = UsageState {
        money: Money::new(clients.dynamodb(), tables.state),
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

async fn read(State(s): State<UsageState>, Admin(claims): Admin) -> ApiResult<Json<Value>> {
    Ok(Json(json!(service::budget(&s.money, &claims, None).await?)))
}

async fn read_workflow(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(
        service::budget(&s.money, &claims, Some(&id)).await?
    )))
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
    let view =
        service::set_budget(&s.money, &claims, None, req.monthly_usd, req.monthly_tokens).await?;
    Ok(Json(json!(view)))
}

async fn set_workflow(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path(id): Path<String>,
    Json(req): Json<SetBudget>,
) -> ApiResult<Json<Value>> {
    let view = service::set_budget(
        &s.money,
        &claims,
        Some(&id),
        req.monthly_usd,
        req.monthly_tokens,
    )
    .await?;
    Ok(Json(json!(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// The tenant's usage: totals per group over `from`..=`to` (default: this month so far).
async fn report(
    State(s): State<UsageState>,
    Authenticated(claims): Authenticated,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let axum::extract::Query(q) =
        query.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    let report = service::report(
        &s.money,
        &claims,
        q.from.as_deref(),
        q.to.as_deref(),
        q.group_by.as_deref(),
    )
    .await?;
    Ok(Json(json!(report)))
}

async fn prices(
    State(s): State<UsageState>,
    Authenticated(claims): Authenticated,
) -> ApiResult<Json<Value>> {
    let prices = service::prices(&s.money, &claims).await?;
    Ok(Json(json!({"prices": prices})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPrice {
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
}

/// Sets what this tenant pays for a model (per million tokens); other tenants keep theirs.
async fn set_price(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path((provider, model)): Path<(String, String)>,
    Json(req): Json<SetPrice>,
) -> ApiResult<Json<Value>> {
    let stored = service::set_price(
        &s.money,
        &claims,
        &provider,
        &model,
        req.input_usd_per_mtok,
        req.output_usd_per_mtok,
    )
    .await?;
    Ok(Json(json!(stored)))
}

/// Back to the list price for this tenant.
async fn remove_price(
    State(s): State<UsageState>,
    Admin(claims): Admin,
    Path((provider, model)): Path<(String, String)>,
) -> ApiResult<axum::http::StatusCode> {
    service::remove_price(&s.money, &claims, &provider, &model).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
