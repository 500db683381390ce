//! The schema: queries, mutations and the federation entities `Workflow`, `Execution` and
//! `User` (`@key(fields: "id")`), each resolved within the caller's tenant only.

use async_graphql::{
    Context, EmptySubscription, Json, Object, SDLExportOptions, Schema, SchemaBuilder, ID,
};
use serde_json::Value;
use shared::services::{executions, users, workflows};

use crate::context::{claims, services, users as user_store};
use crate::errors::OrGraphql;
use crate::types::*;

pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// Deepest selection a query may make. The deepest useful one (a workflow's executions' steps'
/// error) is 6 levels; a gateway's `_entities` query adds 2.
pub const MAX_DEPTH: usize = 10;
/// Largest estimated cost: each field counts 1, a list counts its `first` times its fields.
pub const MAX_COMPLEXITY: usize = 5_000;

pub struct Query;

fn none_if_missing<T>(r: shared::http::ApiResult<T>) -> async_graphql::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.status.as_u16() == 404 => Ok(None),
        Err(e) => Err(crate::errors::from_problem(e)),
    }
}

#[Object]
impl Query {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        Ok(User(users::me(user_store(ctx), claims(ctx)?).await.gql()?))
    }

    /// The users of your tenant (admins only), by name.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_FIRST).clamp(1, 100) as usize * child_complexity"
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 1, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<User>> {
        let (items, next) = users::list(
            user_store(ctx),
            claims(ctx)?,
            Some(first.unwrap_or(DEFAULT_FIRST)),
            after.as_deref(),
        )
        .await
        .gql()?;
        Ok(Page::new(items.into_iter().map(User).collect(), next))
    }

    /// Your tenant's workflows, oldest first.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_FIRST).clamp(1, 100) as usize * child_complexity"
    )]
    async fn workflows(
        &self,
        ctx: &Context<'_>,
        status: Option<WorkflowStatus>,
        name_prefix: Option<String>,
        #[graphql(validator(minimum = 1, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Workflow>> {
        let (items, next) = workflows::list(
            &services(ctx).workflows,
            claims(ctx)?,
            status.map(WorkflowStatus::as_str),
            name_prefix.as_deref(),
            Some(first.unwrap_or(DEFAULT_FIRST) as u32),
            after.as_deref(),
        )
        .await
        .gql()?;
        Ok(Page::new(items.into_iter().map(Workflow).collect(), next))
    }

    /// One workflow; null when your tenant has none with this id.
    async fn workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Workflow>> {
        Ok(
            none_if_missing(workflows::get(&services(ctx).workflows, claims(ctx)?, &id).await)?
                .map(Workflow),
        )
    }

    /// Your tenant's executions (of one workflow, with one status), newest first.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_FIRST).clamp(1, 100) as usize * child_complexity"
    )]
    async fn executions(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<ID>,
        status: Option<ExecutionStatus>,
        #[graphql(validator(minimum = 1, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Execution>> {
        list_executions(
            ctx,
            workflow_id.as_ref().map(|i| i.as_str()),
            status,
            first,
            after,
        )
        .await
    }

    /// One execution as its events say now; null when your tenant has none with this id.
    async fn execution(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Execution>> {
        Ok(
            none_if_missing(executions::load(services(ctx), claims(ctx)?, &id).await)?
                .map(|(_, state)| Execution::full(state)),
        )
    }

    /// Tokens and cost over `from..=to` (dates like `2026-11-25`; default this month so far),
    /// grouped by day, month, workflow or model.
    #[graphql(complexity = 200)]
    async fn usage(
        &self,
        ctx: &Context<'_>,
        from: Option<String>,
        to: Option<String>,
        group_by: Option<crate::money::UsageGroup>,
    ) -> async_graphql::Result<crate::money::UsageReport> {
        crate::money::report(ctx, from, to, group_by).await
    }

    /// The tenant's budget, or one workflow's (admins only).
    async fn budgets(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<ID>,
    ) -> async_graphql::Result<crate::money::Budget> {
        crate::money::budget(ctx, workflow_id.as_ref().map(|i| i.as_str())).await
    }

    /// What the tenant pays per model.
    async fn prices(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<crate::money::Price>> {
        crate::money::prices(ctx).await
    }

    /// The MCP servers registered for the tenant.
    #[graphql(complexity = "10 * child_complexity")]
    async fn mcp_servers(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<crate::money::McpServer>> {
        crate::money::servers(ctx).await
    }

    /// Through the batch loader: a gateway's list of references is one BatchGetItem per 100.
    #[graphql(entity)]
    async fn find_workflow_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Workflow>> {
        crate::context::entity(ctx)?;
        claims(ctx)?;
        Ok(
            crate::types::loaded(crate::context::loaders(ctx).workflows.load_one(id.0).await)?
                .map(Workflow),
        )
    }

    /// Through the batch loader: executions are read a few at a time, each once.
    #[graphql(entity)]
    async fn find_execution_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Execution>> {
        crate::context::entity(ctx)?;
        claims(ctx)?;
        Ok(
            crate::types::loaded(crate::context::loaders(ctx).executions.load_one(id.0).await)?
                .map(|state| Execution {
                    summary: shared::domain::execution::Summary::of(&state),
                    state: Some(state),
                }),
        )
    }

    /// You, or (for an admin) anyone of your tenant; null otherwise.
    #[graphql(entity)]
    async fn find_user_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<User>> {
        crate::context::entity(ctx)?;
        Ok(users::find(user_store(ctx), claims(ctx)?, &id)
            .await
            .gql()?
            .map(User))
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates a workflow from its definition (the same document REST takes, as JSON).
    async fn create_workflow(
        &self,
        ctx: &Context<'_>,
        definition: Json<Value>,
    ) -> async_graphql::Result<Workflow> {
        let (workflow, _) = workflows::create(&services(ctx).workflows, claims(ctx)?, &definition)
            .await
            .gql()?;
        Ok(Workflow(workflow))
    }

    /// Adds a version, only if `expectedVersion` is still the latest (else CONFLICT: read it
    /// again).
    async fn update_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        definition: Json<Value>,
        expected_version: u32,
    ) -> async_graphql::Result<Workflow> {
        let (workflow, _) = workflows::update(
            &services(ctx).workflows,
            claims(ctx)?,
            &id,
            Some(expected_version),
            &definition,
        )
        .await
        .gql()?;
        Ok(Workflow(workflow))
    }

    /// Checks a definition without saving it: every problem with its JSON pointer.
    async fn validate_workflow(
        &self,
        ctx: &Context<'_>,
        definition: Json<Value>,
    ) -> async_graphql::Result<ValidationResult> {
        claims(ctx)?;
        Ok(match workflows::checked(&definition) {
            Ok(_) => ValidationResult {
                valid: true,
                problems: vec![],
            },
            Err(e) => {
                let listed: Vec<shared::domain::Problem> = e
                    .errors
                    .clone()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default();
                let problems = if listed.is_empty() {
                    vec![ValidationProblem {
                        pointer: String::new(),
                        message: e.detail,
                    }]
                } else {
                    listed
                        .into_iter()
                        .map(|p| ValidationProblem {
                            pointer: p.pointer,
                            message: p.message,
                        })
                        .collect()
                };
                ValidationResult {
                    valid: false,
                    problems,
                }
            }
        })
    }

    /// Archives a workflow: it starts no new executions; running ones go on.
    async fn archive_workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Workflow> {
        Ok(Workflow(
            workflows::archive(&services(ctx).workflows, claims(ctx)?, &id)
                .await
                .gql()?,
        ))
    }

    async fn restore_workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Workflow> {
        Ok(Workflow(
            workflows::restore(&services(ctx).workflows, claims(ctx)?, &id)
                .await
                .gql()?,
        ))
    }

    /// Starts an execution of the latest (or the given) version. The same `idempotencyKey`
    /// with the same input answers with the execution it started (`replayed: true`).
    async fn start_execution(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        input: Option<Json<Value>>,
        version: Option<u32>,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<StartedExecution> {
        let req = executions::StartRequest {
            input: input.map(|j| j.0).unwrap_or(Value::Null),
            version,
            idempotency_key: executions::idempotency_key(idempotency_key.as_deref()).gql()?,
        };
        Ok(
            executions::start(services(ctx), claims(ctx)?, &workflow_id, &req)
                .await
                .gql()?
                .into(),
        )
    }

    async fn cancel_execution(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<CommandAccepted> {
        Ok(executions::cancel(services(ctx), claims(ctx)?, &id, reason)
            .await
            .gql()?
            .into())
    }

    /// Approves step `step` (its key) of a running execution waiting for a decision.
    async fn approve_step(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        step: String,
        comment: Option<String>,
    ) -> async_graphql::Result<CommandAccepted> {
        decide(
            ctx,
            &execution_id,
            &step,
            executions::Decision::Approve,
            comment,
        )
        .await
    }

    /// Rejects step `step`: the execution fails with `ApprovalRejected` (catchable).
    async fn reject_step(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
        step: String,
        comment: Option<String>,
    ) -> async_graphql::Result<CommandAccepted> {
        decide(
            ctx,
            &execution_id,
            &step,
            executions::Decision::Reject,
            comment,
        )
        .await
    }

    /// Sets the monthly limits of the tenant, or of one workflow (admins only). A limit left
    /// out stays as it is; `null` clears it.
    async fn set_budget(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<ID>,
        monthly_usd: async_graphql::MaybeUndefined<f64>,
        monthly_tokens: async_graphql::MaybeUndefined<crate::scalars::Long>,
    ) -> async_graphql::Result<crate::money::Budget> {
        crate::money::set_budget(
            ctx,
            workflow_id.as_ref().map(|i| i.as_str()),
            monthly_usd,
            monthly_tokens,
        )
        .await
    }

    /// Runs a failed execution again from where it failed.
    async fn redrive_execution(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<CommandAccepted> {
        Ok(executions::redrive(services(ctx), claims(ctx)?, &id)
            .await
            .gql()?
            .into())
    }
}

async fn decide(
    ctx: &Context<'_>,
    execution_id: &str,
    step: &str,
    decision: executions::Decision,
    comment: Option<String>,
) -> async_graphql::Result<CommandAccepted> {
    Ok(executions::decide(
        services(ctx),
        claims(ctx)?,
        execution_id,
        step,
        decision,
        comment,
    )
    .await
    .gql()?
    .into())
}

/// The schema with its limits; data (clients) is added by the caller.
pub fn builder(introspection: bool) -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    let builder = Schema::build(Query, Mutation, EmptySubscription)
        .enable_federation()
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(8);
    if introspection {
        builder
    } else {
        builder.disable_introspection()
    }
}

/// The subgraph's SDL as a gateway composes it (federation v2 directives included).
pub fn sdl() -> String {
    builder(true)
        .finish()
        .sdl_with_options(SDLExportOptions::new().federation())
}
