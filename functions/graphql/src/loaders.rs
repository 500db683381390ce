//! Batch loaders: a listing whose items show their workflow, their steps or their steps' cost
//! reads those together (one BatchGetItem for workflow heads; execution states concurrently),
//! never one item at a time, and each at most once per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use shared::auth::Claims;
use shared::domain::execution::{ExecutionState, StepDetail};
use shared::engine::Services;
use shared::http::ApiError;
use shared::services::{executions, workflows};
use shared::workflows::Workflow;

/// How many execution states one batch reads at the same time.
const CONCURRENT_LOADS: usize = 8;

pub struct WorkflowLoader {
    pub services: Services,
    pub claims: Option<Claims>,
}

fn caller(claims: &Option<Claims>) -> Result<&Claims, Arc<ApiError>> {
    claims
        .as_ref()
        .ok_or_else(|| Arc::new(ApiError::unauthorized("send an access token")))
}

impl Loader<String> for WorkflowLoader {
    type Value = Workflow;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Workflow>, Self::Error> {
        let claims = caller(&self.claims)?;
        let heads = workflows::heads(&self.services.workflows, claims, keys)
            .await
            .map_err(Arc::new)?;
        Ok(heads.into_iter().map(|w| (w.id.clone(), w)).collect())
    }
}

pub struct ExecutionLoader {
    pub services: Services,
    pub claims: Option<Claims>,
}

impl Loader<String> for ExecutionLoader {
    type Value = Arc<ExecutionState>;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, Arc<ExecutionState>>, Self::Error> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let claims = caller(&self.claims)?;
        stream::iter(keys.iter().cloned())
            .map(|id| async move {
                match executions::load(&self.services, claims, &id).await {
                    Ok((_, state)) => Ok(Some((id, Arc::new(state)))),
                    Err(e) if e.status.as_u16() == 404 => Ok(None),
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .buffer_unordered(CONCURRENT_LOADS)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }
}

pub struct StepDetailLoader {
    pub services: Services,
    pub claims: Option<Claims>,
}

impl Loader<String> for StepDetailLoader {
    type Value = Arc<BTreeMap<String, StepDetail>>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let claims = caller(&self.claims)?;
        stream::iter(keys.iter().cloned())
            .map(|id| async move {
                match executions::step_details(&self.services, claims, &id).await {
                    Ok(details) => Ok(Some((id, Arc::new(details)))),
                    Err(e) if e.status.as_u16() == 404 => Ok(None),
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .buffer_unordered(CONCURRENT_LOADS)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }
}
