//! Money and tools in the schema: usage reports, budgets, prices, MCP servers and their tools.

use async_graphql::{Context, Enum, Json, MaybeUndefined, Object, SimpleObject, ID};
use serde_json::Value;
use shared::services::{mcp, usage};

use crate::context::{claims, mcp_clients, money};
use crate::errors::OrGraphql;
use crate::scalars::Long;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum UsageGroup {
    Day,
    Month,
    Workflow,
    Model,
}

impl UsageGroup {
    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Workflow => "workflow",
            Self::Model => "model",
        }
    }
}

/// Totals of one group (a day `2026-11-25`, a month `2026-11`, a workflow id, a
/// `provider/model`), or of the whole report.
#[derive(SimpleObject)]
pub struct UsageTotal {
    /// The group's key; empty for the whole report.
    pub key: String,
    pub steps: Long,
    pub input_tokens: Long,
    pub output_tokens: Long,
    pub cost_usd: f64,
}

#[derive(SimpleObject)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub group_by: UsageGroup,
    pub groups: Vec<UsageTotal>,
    pub total: UsageTotal,
}

pub async fn report(
    ctx: &Context<'_>,
    from: Option<String>,
    to: Option<String>,
    group_by: Option<UsageGroup>,
) -> async_graphql::Result<UsageReport> {
    let by = group_by.unwrap_or(UsageGroup::Day);
    let r = usage::report(
        money(ctx),
        claims(ctx)?,
        from.as_deref(),
        to.as_deref(),
        Some(by.as_str()),
    )
    .await
    .gql()?;
    Ok(UsageReport {
        from: r.from,
        to: r.to,
        group_by: by,
        groups: r
            .groups
            .into_iter()
            .map(|t| UsageTotal {
                key: t.key,
                steps: t.steps.into(),
                input_tokens: t.input_tokens.into(),
                output_tokens: t.output_tokens.into(),
                cost_usd: t.cost_usd,
            })
            .collect(),
        total: UsageTotal {
            key: String::new(),
            steps: r.total.steps.into(),
            input_tokens: r.total.input_tokens.into(),
            output_tokens: r.total.output_tokens.into(),
            cost_usd: r.total.cost_usd,
        },
    })
}

pub struct Budget(pub usage::BudgetView);

/// Monthly limits of the tenant or of one workflow, and this month's spend: what LLM steps
/// have spent, what running attempts hold reserved, and what is left.
#[Object]
impl Budget {
    /// The workflow this budget is for; null for the tenant's.
    async fn workflow_id(&self) -> Option<ID> {
        self.0.workflow_id.clone().map(ID)
    }
    /// `YYYY-MM`, in UTC.
    async fn period(&self) -> &str {
        &self.0.period
    }
    async fn monthly_usd(&self) -> Option<f64> {
        self.0.monthly_usd
    }
    async fn monthly_tokens(&self) -> Option<Long> {
        self.0.monthly_tokens.map(Long::from)
    }
    async fn spent_usd(&self) -> f64 {
        self.0.spent_usd
    }
    async fn spent_tokens(&self) -> Long {
        self.0.spent_tokens.into()
    }
    async fn reserved_usd(&self) -> f64 {
        self.0.reserved_usd
    }
    async fn reserved_tokens(&self) -> Long {
        self.0.reserved_tokens.into()
    }
    /// Null when no dollar limit is set.
    async fn available_usd(&self) -> Option<f64> {
        self.0.available_usd
    }
    async fn available_tokens(&self) -> Option<Long> {
        self.0.available_tokens.map(Long)
    }
}

pub async fn budget(ctx: &Context<'_>, workflow: Option<&str>) -> async_graphql::Result<Budget> {
    Ok(Budget(
        usage::budget(money(ctx), claims(ctx)?, workflow)
            .await
            .gql()?,
    ))
}

/// A limit left out stays as it is; `null` clears it.
pub async fn set_budget(
    ctx: &Context<'_>,
    workflow: Option<&str>,
    monthly_usd: MaybeUndefined<f64>,
    monthly_tokens: MaybeUndefined<Long>,
) -> async_graphql::Result<Budget> {
    let current = if monthly_usd.is_undefined() || monthly_tokens.is_undefined() {
        Some(
            usage::budget(money(ctx), claims(ctx)?, workflow)
                .await
                .gql()?,
        )
    } else {
        None
    };
    let monthly_usd = match monthly_usd {
        MaybeUndefined::Undefined => current.as_ref().and_then(|c| c.monthly_usd),
        MaybeUndefined::Null => None,
        MaybeUndefined::Value(v) => Some(v),
    };
    let monthly_tokens = match monthly_tokens {
        MaybeUndefined::Undefined => current
            .as_ref()
            .and_then(|c| c.monthly_tokens)
            .map(Long::from),
        MaybeUndefined::Null => None,
        MaybeUndefined::Value(v) => Some(v),
    };
    let tokens = match monthly_tokens {
        Some(Long(t)) if t < 0 => {
            return Err(crate::errors::from_problem(
                shared::http::ApiError::unprocessable(
                    "invalid-budget",
                    "`monthlyTokens` is not negative",
                ),
            ))
        }
        Some(Long(t)) => Some(t as u64),
        None => None,
    };
    Ok(Budget(
        usage::set_budget(money(ctx), claims(ctx)?, workflow, monthly_usd, tokens)
            .await
            .gql()?,
    ))
}

/// What the tenant pays for a model, per million tokens.
#[derive(SimpleObject)]
pub struct Price {
    pub provider: String,
    pub model: String,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    /// `global` (the list price table) or `tenant` (the tenant's own).
    pub source: String,
}

pub async fn prices(ctx: &Context<'_>) -> async_graphql::Result<Vec<Price>> {
    Ok(usage::prices(money(ctx), claims(ctx)?)
        .await
        .gql()?
        .into_iter()
        .map(|p| Price {
            provider: p.provider,
            model: p.model,
            input_usd_per_mtok: p.input_usd_per_mtok,
            output_usd_per_mtok: p.output_usd_per_mtok,
            source: p.source,
        })
        .collect())
}

pub struct McpServer(pub shared::mcp::McpServer);

/// An MCP server registered for the tenant's `mcp` steps.
#[Object]
impl McpServer {
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn url(&self) -> &str {
        &self.0.url
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// `bearer` when a token is registered (it is never shown), else `none`.
    async fn auth(&self) -> &str {
        if self.0.secret_arn.is_some() {
            "bearer"
        } else {
            "none"
        }
    }
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
    /// The tools the server offers now (asked of the server; each with its `name`,
    /// `description` and `input_schema`). Null, with an error, when the server cannot be asked.
    #[graphql(complexity = 50)]
    async fn tools(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<Json<Value>>>> {
        Ok(Some(
            mcp::tools(mcp_clients(ctx), claims(ctx)?, &self.0.name)
                .await
                .gql()?
                .into_iter()
                .map(Json)
                .collect(),
        ))
    }
}

pub async fn servers(ctx: &Context<'_>) -> async_graphql::Result<Vec<McpServer>> {
    Ok(mcp::list(mcp_clients(ctx), claims(ctx)?)
        .await
        .gql()?
        .into_iter()
        .map(McpServer)
        .collect())
}
