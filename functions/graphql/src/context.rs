//! What each request brings to the resolvers: who is calling (or why nobody is), and the batch
//! loaders, which are per request so no answer is ever shared between callers.

use async_graphql::dataloader::DataLoader;
use async_graphql::Context;
use shared::auth::Claims;
use shared::http::ApiError;

use crate::errors::OrGraphql;
use crate::loaders::{ExecutionLoader, StepDetailLoader, WorkflowLoader};

/// The verified bearer token, or the reason there is none.
pub struct Caller(pub Result<Claims, ApiError>);

pub struct Loaders {
    pub workflows: DataLoader<WorkflowLoader>,
    pub executions: DataLoader<ExecutionLoader>,
    pub step_details: DataLoader<StepDetailLoader>,
}

pub fn claims<'c>(ctx: &Context<'c>) -> async_graphql::Result<&'c Claims> {
    match ctx.data::<Caller>() {
        Ok(Caller(result)) => result.as_ref().map_err(|e| e.clone()).gql(),
        Err(_) => Err(crate::errors::from_problem(ApiError::unauthorized(
            "send an access token as `Authorization: Bearer <token>`",
        ))),
    }
}

pub fn services<'c>(ctx: &Context<'c>) -> &'c shared::engine::Services {
    ctx.data_unchecked::<shared::engine::Services>()
}

pub fn users<'c>(ctx: &Context<'c>) -> &'c shared::auth::AuthStore {
    ctx.data_unchecked::<shared::auth::AuthStore>()
}

pub fn loaders<'c>(ctx: &Context<'c>) -> &'c Loaders {
    ctx.data_unchecked::<Loaders>()
}

pub fn money<'c>(ctx: &Context<'c>) -> &'c shared::services::usage::Money {
    ctx.data_unchecked::<shared::services::usage::Money>()
}

pub fn mcp_clients<'c>(ctx: &Context<'c>) -> &'c shared::mcp::McpClients {
    ctx.data_unchecked::<std::sync::Arc<shared::mcp::McpClients>>()
}
