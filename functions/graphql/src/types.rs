//! The schema's object types. Each wraps what the services return; fields that need more than
//! the wrapped value (a workflow's versions, a listed execution's steps) read it through the
//! services or the request's batch loaders.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, Enum, Json, Object, OutputType, SimpleObject, ID};
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::domain::execution::{self as domain, ExecutionState, StepState, Summary};
use shared::services::{executions, workflows};

use crate::context::{claims, loaders, services};
use crate::errors::OrGraphql;
use crate::scalars::Long;

/// Listings' page size when the query names none (at most 100).
pub const DEFAULT_FIRST: i32 = 20;

pub fn loaded<T>(r: Result<T, Arc<shared::http::ApiError>>) -> async_graphql::Result<T> {
    r.map_err(|e| crate::errors::from_problem((*e).clone()))
}

fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Shareable: most subgraphs of a supergraph define the same page info.
#[derive(SimpleObject)]
#[graphql(shareable)]
pub struct PageInfo {
    pub has_next_page: bool,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

/// One page of a listing, newest or oldest first as the listing says.
#[derive(SimpleObject)]
#[graphql(concrete(name = "WorkflowConnection", params(Workflow)))]
#[graphql(concrete(name = "ExecutionConnection", params(Execution)))]
#[graphql(concrete(name = "WorkflowVersionConnection", params(WorkflowVersion)))]
#[graphql(concrete(name = "UserConnection", params(User)))]
pub struct Page<T: OutputType> {
    pub nodes: Vec<T>,
    pub page_info: PageInfo,
}

impl<T: OutputType> Page<T> {
    pub fn new(nodes: Vec<T>, next: Option<String>) -> Self {
        Self {
            nodes,
            page_info: PageInfo {
                has_next_page: next.is_some(),
                end_cursor: next,
            },
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum WorkflowStatus {
    Active,
    Archived,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

pub struct Workflow(pub shared::workflows::Workflow);

/// A workflow definition, versioned: every change is a new immutable version.
#[Object]
impl Workflow {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    async fn status(&self) -> WorkflowStatus {
        match self.0.status {
            shared::workflows::WorkflowStatus::Active => WorkflowStatus::Active,
            shared::workflows::WorkflowStatus::Archived => WorkflowStatus::Archived,
        }
    }
    async fn latest_version(&self) -> u32 {
        self.0.latest_version
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        timestamp(&self.0.created_at)
    }
    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        timestamp(&self.0.updated_at)
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    /// The latest version's definition.
    #[graphql(complexity = 5)]
    async fn definition(&self, ctx: &Context<'_>) -> async_graphql::Result<Json<Value>> {
        let v = workflows::version(
            &services(ctx).workflows,
            claims(ctx)?,
            &self.0.id,
            self.0.latest_version,
        )
        .await
        .gql()?;
        Ok(Json(
            serde_json::to_value(v.definition)
                .map_err(shared::http::internal)
                .gql()?,
        ))
    }
    /// One version; null when there is no such version.
    async fn version(
        &self,
        ctx: &Context<'_>,
        version: u32,
    ) -> async_graphql::Result<Option<WorkflowVersion>> {
        match workflows::version(&services(ctx).workflows, claims(ctx)?, &self.0.id, version).await
        {
            Ok(v) => Ok(Some(WorkflowVersion(v))),
            Err(e) if e.status.as_u16() == 404 => Ok(None),
            Err(e) => Err(crate::errors::from_problem(e)),
        }
    }
    /// Versions, newest first.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_FIRST).clamp(1, 100) as usize * child_complexity"
    )]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 1, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<WorkflowVersion>> {
        let (items, next) = workflows::versions(
            &services(ctx).workflows,
            claims(ctx)?,
            &self.0.id,
            Some(first.unwrap_or(DEFAULT_FIRST) as u32),
            after.as_deref(),
        )
        .await
        .gql()?;
        Ok(Page::new(
            items.into_iter().map(WorkflowVersion).collect(),
            next,
        ))
    }
    /// Outcomes, duration and spend over the most recent runs.
    #[graphql(complexity = 100)]
    async fn stats(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<WorkflowStats>> {
        let claims = claims(ctx)?;
        let stats = services(ctx)
            .projections
            .workflow_stats(&claims.tenant, &self.0.id)
            .await
            .map_err(shared::http::internal)
            .gql()?;
        Ok(Some(WorkflowStats(stats)))
    }
    /// This workflow's own budget (admins only; null with a FORBIDDEN error for others).
    #[graphql(complexity = 10)]
    async fn budget(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::money::Budget>> {
        crate::money::budget(ctx, Some(&self.0.id)).await.map(Some)
    }
    /// This workflow's executions, newest first.
    #[graphql(
        complexity = "first.unwrap_or(DEFAULT_FIRST).clamp(1, 100) as usize * child_complexity"
    )]
    async fn executions(
        &self,
        ctx: &Context<'_>,
        status: Option<ExecutionStatus>,
        #[graphql(validator(minimum = 1, maximum = 100))] first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Page<Execution>> {
        list_executions(ctx, Some(&self.0.id), status, first, after).await
    }
}

pub async fn list_executions(
    ctx: &Context<'_>,
    workflow_id: Option<&str>,
    status: Option<ExecutionStatus>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<Page<Execution>> {
    let page = executions::list(
        services(ctx),
        claims(ctx)?,
        workflow_id,
        status.map(ExecutionStatus::as_str),
        Some(first.unwrap_or(DEFAULT_FIRST) as u32),
        after.as_deref(),
    )
    .await
    .gql()?;
    Ok(Page::new(
        page.items.into_iter().map(Execution::listed).collect(),
        page.next_cursor,
    ))
}

pub struct WorkflowVersion(pub shared::workflows::Version);

#[Object]
impl WorkflowVersion {
    async fn version(&self) -> u32 {
        self.0.version
    }
    async fn definition(&self) -> async_graphql::Result<Json<Value>> {
        Ok(Json(
            serde_json::to_value(&self.0.definition)
                .map_err(shared::http::internal)
                .gql()?,
        ))
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        timestamp(&self.0.created_at)
    }
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
}

pub struct WorkflowStats(pub shared::executions::WorkflowStats);

#[Object]
impl WorkflowStats {
    async fn runs(&self) -> usize {
        self.0.runs
    }
    async fn running(&self) -> usize {
        self.0.running
    }
    async fn succeeded(&self) -> usize {
        self.0.succeeded
    }
    async fn failed(&self) -> usize {
        self.0.failed
    }
    async fn cancelled(&self) -> usize {
        self.0.cancelled
    }
    /// Succeeded over finished; null before any run finished.
    async fn success_rate(&self) -> Option<f64> {
        self.0.success_rate
    }
    async fn median_duration_ms(&self) -> Option<Long> {
        self.0.median_duration_ms.map(Long)
    }
    async fn cost_usd(&self) -> f64 {
        self.0.cost_usd
    }
    async fn input_tokens(&self) -> Long {
        self.0.input_tokens.into()
    }
    async fn output_tokens(&self) -> Long {
        self.0.output_tokens.into()
    }
    /// True when only the most recent runs were counted.
    async fn windowed(&self) -> bool {
        self.0.windowed
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ExecutionStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn of(s: &str) -> Self {
        match s {
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => Self::Running,
        }
    }
}

/// An execution: its listing summary, and its full state once read (a listing item reads it
/// only when a field needs it, through the batch loader).
pub struct Execution {
    pub summary: Summary,
    pub state: Option<Arc<ExecutionState>>,
}

impl Execution {
    pub fn listed(summary: Summary) -> Self {
        Self {
            summary,
            state: None,
        }
    }

    pub fn full(state: ExecutionState) -> Self {
        Self {
            summary: Summary::of(&state),
            state: Some(Arc::new(state)),
        }
    }

    async fn state(&self, ctx: &Context<'_>) -> async_graphql::Result<Arc<ExecutionState>> {
        if let Some(state) = &self.state {
            return Ok(state.clone());
        }
        loaded(
            loaders(ctx)
                .executions
                .load_one(self.summary.execution_id.clone())
                .await,
        )?
        .ok_or_else(|| {
            crate::errors::from_problem(shared::http::ApiError::not_found(format!(
                "no execution {}",
                self.summary.execution_id
            )))
        })
    }
}

#[Object]
impl Execution {
    async fn id(&self) -> ID {
        ID(self.summary.execution_id.clone())
    }
    async fn workflow_id(&self) -> ID {
        ID(self.summary.workflow_id.clone())
    }
    async fn workflow_version(&self) -> u32 {
        self.summary.workflow_version
    }
    /// The workflow as it is now (null once it is gone).
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Workflow>> {
        Ok(loaded(
            loaders(ctx)
                .workflows
                .load_one(self.summary.workflow_id.clone())
                .await,
        )?
        .map(Workflow))
    }
    async fn status(&self) -> ExecutionStatus {
        ExecutionStatus::of(&self.summary.status)
    }
    async fn current_steps(&self) -> &[String] {
        &self.summary.current_steps
    }
    /// Keys of the steps waiting for a human decision.
    async fn awaiting_approval(&self) -> &[String] {
        &self.summary.awaiting_approval
    }
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.summary.started_at
    }
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.summary.ended_at
    }
    async fn duration_ms(&self) -> Option<Long> {
        self.summary.duration_ms.map(Long)
    }
    #[graphql(complexity = 5)]
    async fn input(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Json<Value>>> {
        Ok(Some(Json(self.state(ctx).await?.input.clone())))
    }
    async fn output(&self) -> Option<Json<Value>> {
        self.summary.output.clone().map(Json)
    }
    async fn error(&self) -> Option<StepError> {
        self.summary.error.clone().map(StepError)
    }
    async fn failed_step(&self) -> Option<&str> {
        self.summary.failed_step.as_deref()
    }
    async fn parent_execution_id(&self) -> Option<ID> {
        self.summary.parent_execution_id.clone().map(ID)
    }
    async fn input_tokens(&self) -> Long {
        self.summary.input_tokens.into()
    }
    async fn output_tokens(&self) -> Long {
        self.summary.output_tokens.into()
    }
    async fn cost_usd(&self) -> f64 {
        self.summary.cost_usd
    }
    async fn steps_completed(&self) -> usize {
        self.summary.steps_completed
    }
    /// Every step instance, in key order. Costed as 20 steps: a listing that asks for them
    /// reads each execution's state.
    #[graphql(complexity = "20 * child_complexity")]
    async fn steps(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<Step>>> {
        let state = self.state(ctx).await?;
        Ok(Some(
            state
                .steps
                .iter()
                .map(|(key, step)| Step {
                    execution_id: self.summary.execution_id.clone(),
                    key: key.clone(),
                    state: step.clone(),
                })
                .collect(),
        ))
    }
    /// The event history from version `from`, one page.
    #[graphql(complexity = "first.unwrap_or(100).clamp(1, 500) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        from: Option<Long>,
        #[graphql(validator(minimum = 1, maximum = 500))] first: Option<u32>,
    ) -> async_graphql::Result<EventPage> {
        let from = match from {
            Some(Long(v)) if v < 1 => {
                return Err(crate::errors::from_problem(
                    shared::http::ApiError::bad_request(
                        "invalid-query",
                        "`from` is an event version, 1 or more",
                    ),
                ))
            }
            other => other.map(|Long(v)| v as u64),
        };
        let page = executions::history(
            services(ctx),
            claims(ctx)?,
            &self.summary.execution_id,
            from,
            first,
        )
        .await
        .gql()?;
        Ok(EventPage {
            nodes: page.events.into_iter().map(Event).collect(),
            next_from: page.next.map(Long::from),
        })
    }
}

pub struct Step {
    execution_id: String,
    key: String,
    state: StepState,
}

// The engine's step states as they are: `remote` keeps the two in step (a new state there is a
// compile error here).
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "shared::domain::execution::StepStatus")]
pub enum StepStatus {
    Scheduled,
    Running,
    AwaitingApproval,
    RetryPending,
    RetryDue,
    Succeeded,
    Failed,
    Caught,
    /// Its branch lost or its parallel failed: nothing more happens to it.
    Abandoned,
}

impl Step {
    async fn detail(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<domain::StepDetail>> {
        let details = loaded(
            loaders(ctx)
                .step_details
                .load_one(self.execution_id.clone())
                .await,
        )?;
        Ok(details.and_then(|d| d.get(&self.key).cloned()))
    }
}

/// One step instance: `summarise[3]/fetch` is step `fetch` in the 4th item of map `summarise`.
#[Object]
impl Step {
    async fn key(&self) -> &str {
        &self.key
    }
    /// The step's name in the definition.
    async fn step(&self) -> &str {
        &self.state.step
    }
    async fn status(&self) -> StepStatus {
        self.state.status.into()
    }
    async fn attempt(&self) -> u32 {
        self.state.attempt
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.state.started_at
    }
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.state.ended_at
    }
    async fn duration_ms(&self) -> Option<Long> {
        self.state
            .ended_at
            .map(|end| Long((end - self.state.started_at).num_milliseconds()))
    }
    /// What the step was given (its rendered request), latest attempt; null for steps that
    /// take none (waits, branches).
    #[graphql(complexity = 5)]
    async fn input(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Json<Value>>> {
        Ok(self.detail(ctx).await?.and_then(|d| d.input).map(Json))
    }
    async fn output(&self) -> Option<Json<Value>> {
        self.state.output.clone().map(Json)
    }
    async fn error(&self) -> Option<StepError> {
        self.state.error.clone().map(StepError)
    }
    /// Tokens and money of all its attempts (LLM steps; zero for others).
    #[graphql(complexity = 5)]
    async fn input_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Long> {
        Ok(self.detail(ctx).await?.map_or(0, |d| d.input_tokens).into())
    }
    #[graphql(complexity = 5)]
    async fn output_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Long> {
        Ok(self
            .detail(ctx)
            .await?
            .map_or(0, |d| d.output_tokens)
            .into())
    }
    #[graphql(complexity = 5)]
    async fn cost_usd(&self, ctx: &Context<'_>) -> async_graphql::Result<f64> {
        Ok(self.detail(ctx).await?.map_or(0.0, |d| d.cost_usd))
    }
    /// The execution a subworkflow step started.
    async fn child_execution_id(&self) -> Option<ID> {
        self.state.child_execution_id.clone().map(ID)
    }
}

pub struct StepError(pub domain::StepError);

#[Object]
impl StepError {
    /// Stable kind that retries and catches match on (`Timeout`, `HttpError`, ...).
    async fn kind(&self) -> &str {
        &self.0.kind
    }
    async fn message(&self) -> &str {
        &self.0.message
    }
    async fn retryable(&self) -> bool {
        self.0.retryable
    }
}

#[derive(SimpleObject)]
pub struct EventPage {
    pub nodes: Vec<Event>,
    /// Pass as `from` for the next page; null at the end of the history.
    pub next_from: Option<Long>,
}

pub struct Event(pub shared::events::Envelope);

#[Object]
impl Event {
    async fn version(&self) -> Long {
        self.0.version.into()
    }
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.metadata.occurred_at
    }
    async fn actor(&self) -> Option<&str> {
        self.0.metadata.actor.as_deref()
    }
    async fn payload(&self) -> Json<&serde_json::Map<String, Value>> {
        Json(&self.0.payload)
    }
}

pub struct User(pub shared::auth::User);

/// A person who signs in; `id` is their user name, unique within their tenant.
#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.username.clone())
    }
    async fn username(&self) -> &str {
        &self.0.username
    }
    async fn tenant(&self) -> &str {
        &self.0.tenant
    }
    async fn roles(&self) -> &[String] {
        &self.0.roles
    }
    async fn disabled(&self) -> bool {
        self.0.disabled
    }
    async fn created_at(&self) -> Option<DateTime<Utc>> {
        timestamp(&self.0.created_at)
    }
}

/// What starting an execution did.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct StartedExecution {
    pub execution_id: ID,
    pub workflow_id: ID,
    pub workflow_version: u32,
    pub status: ExecutionStatus,
    /// True when an earlier request with the same idempotency key started it.
    pub replayed: bool,
}

#[ComplexObject]
impl StartedExecution {
    /// The execution as it is now.
    async fn execution(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Execution>> {
        Ok(loaded(
            loaders(ctx)
                .executions
                .load_one(self.execution_id.0.clone())
                .await,
        )?
        .map(|state| Execution {
            summary: Summary::of(&state),
            state: Some(state),
        }))
    }
}

impl From<executions::Started> for StartedExecution {
    fn from(s: executions::Started) -> Self {
        Self {
            execution_id: ID(s.execution_id),
            workflow_id: ID(s.workflow_id),
            workflow_version: s.workflow_version,
            status: ExecutionStatus::of(&s.status),
            replayed: s.replayed,
        }
    }
}

/// A command the execution took; the orchestrator carries it out.
#[derive(SimpleObject)]
pub struct CommandAccepted {
    pub execution_id: ID,
    /// The event appended (`ExecutionCancelled`, `ApprovalGranted`, ...).
    pub accepted: String,
    /// The execution's version after it.
    pub version: Long,
}

impl From<executions::Accepted> for CommandAccepted {
    fn from(a: executions::Accepted) -> Self {
        Self {
            execution_id: ID(a.execution_id),
            accepted: a.accepted.to_owned(),
            version: a.version.into(),
        }
    }
}

#[derive(SimpleObject)]
pub struct ValidationProblem {
    /// JSON pointer into the definition (empty for the whole document).
    pub pointer: String,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct ValidationResult {
    pub valid: bool,
    pub problems: Vec<ValidationProblem>,
}
