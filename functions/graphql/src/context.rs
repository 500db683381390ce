//! What each request brings to the resolvers: who is calling (or why nobody is), and the batch
//! loaders, which are per request so no answer is ever shared between callers.

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::Context;
use async_graphql::ErrorExtensions;
use shared::auth::Claims;
use shared::http::ApiError;

use crate::errors::OrGraphql;
use crate::loaders::{ExecutionLoader, StepDetailLoader, WorkflowLoader};

/// The verified bearer token, or the reason there is none.
pub struct Caller(pub Result<Claims, ApiError>);

pub struct Loaders {
    pub workflows: DataLoader<WorkflowLoader, HashMapCache>,
    pub executions: DataLoader<ExecutionLoader, HashMapCache>,
    pub step_details: DataLoader<StepDetailLoader, HashMapCache>,
    /// Entity references resolved so far: `_entities` takes a list of any length.
    pub entities: std::sync::atomic::AtomicUsize,
}

/// Most entity references one request may resolve (a gateway asks for one page's worth).
pub const MAX_ENTITIES: usize = 100;

/// Counts one entity reference; refuses past [`MAX_ENTITIES`].
pub fn entity(ctx: &Context<'_>) -> async_graphql::Result<()> {
    let n = loaders(ctx)
        .entities
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n >= MAX_ENTITIES {
        let mut e = async_graphql::Error::new(format!(
            "a request resolves at most {MAX_ENTITIES} entity references"
        ));
        e = e.extend_with(|_, ext| ext.set("code", crate::errors::MAX_ENTITIES_LIMIT));
        return Err(e);
    }
    Ok(())
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
