//! Workflow definitions: create, read, list, new versions, archive and restore, validation.

use serde_json::Value;

use crate::auth::Claims;
use crate::domain::{Definition, Problem};
use crate::http::{ApiError, ApiResult};
use crate::workflows::{Version, Workflow, WorkflowError, WorkflowStore};

/// Page size of listings when the caller names none, and the most one page holds.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 100;

pub fn workflow_error(e: WorkflowError) -> ApiError {
    match e {
        WorkflowError::Exists(_) => ApiError::conflict("workflow-exists", e.to_string()),
        WorkflowError::NotFound(_) | WorkflowError::NoVersion { .. } => {
            ApiError::not_found(e.to_string())
        }
        WorkflowError::Conflict(_) => ApiError::conflict("version-conflict", e.to_string()),
        WorkflowError::BadCursor(m) => ApiError::bad_request("invalid-cursor", m),
        WorkflowError::Backend(b) => ApiError::internal(b),
    }
}

/// Reads and validates a definition document; every problem at once as one 422.
pub fn checked(document: &Value) -> ApiResult<Definition> {
    crate::http::storable(document)?;
    crate::domain::validate::check(document).map_err(invalid)
}

fn invalid(problems: Vec<Problem>) -> ApiError {
    let summary = problems
        .iter()
        .take(3)
        .map(|p| {
            let at = if p.pointer.is_empty() {
                "/"
            } else {
                &p.pointer
            };
            format!("{at}: {}", p.message)
        })
        .collect::<Vec<_>>()
        .join("; ");
    let more = problems.len().saturating_sub(3);
    let detail = if more > 0 {
        format!("{summary}; and {more} more (see `errors`)")
    } else {
        summary
    };
    ApiError::unprocessable(
        "invalid-workflow",
        format!("the workflow is not valid: {detail}"),
    )
    .with_errors(problems)
}

pub async fn create(
    store: &WorkflowStore,
    claims: &Claims,
    document: &Value,
) -> ApiResult<(Workflow, Version)> {
    let definition = checked(document)?;
    let id = definition
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    store
        .create(&claims.tenant, &claims.sub, &id, definition)
        .await
        .map_err(workflow_error)
}

/// One page of the tenant's workflows, optionally only those with `status` or a name prefix.
pub async fn list(
    store: &WorkflowStore,
    claims: &Claims,
    status: Option<&str>,
    name_prefix: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<(Vec<Workflow>, Option<String>)> {
    if let Some(status) = status {
        if !matches!(status, "active" | "archived") {
            return Err(ApiError::bad_request(
                "invalid-query",
                "`status` is `active` or `archived`",
            ));
        }
    }
    store
        .list(
            &claims.tenant,
            status,
            name_prefix,
            limit.unwrap_or(DEFAULT_PAGE),
            cursor,
        )
        .await
        .map_err(workflow_error)
}

pub async fn get(store: &WorkflowStore, claims: &Claims, id: &str) -> ApiResult<Workflow> {
    store.get(&claims.tenant, id).await.map_err(workflow_error)
}

/// The workflow with its latest version.
pub async fn latest(
    store: &WorkflowStore,
    claims: &Claims,
    id: &str,
) -> ApiResult<(Workflow, Version)> {
    let workflow = get(store, claims, id).await?;
    let version = version(store, claims, id, workflow.latest_version).await?;
    Ok((workflow, version))
}

pub async fn version(
    store: &WorkflowStore,
    claims: &Claims,
    id: &str,
    version: u32,
) -> ApiResult<Version> {
    store
        .version(&claims.tenant, id, version)
        .await
        .map_err(workflow_error)
}

/// A new version of workflow `id`. With `expected`, only if the latest version is still that
/// one (the version the caller read); a concurrent change answers 409 either way.
pub async fn update(
    store: &WorkflowStore,
    claims: &Claims,
    id: &str,
    expected: Option<u32>,
    document: &Value,
) -> ApiResult<(Workflow, Version)> {
    let definition = checked(document)?;
    if definition.id.as_deref().is_some_and(|given| given != id) {
        return Err(ApiError::unprocessable(
            "id-mismatch",
            format!("the body's id is not {id}"),
        ));
    }
    let expected = match expected {
        Some(v) => v,
        None => get(store, claims, id).await?.latest_version,
    };
    store
        .update(&claims.tenant, &claims.sub, id, expected, definition)
        .await
        .map_err(workflow_error)
}

pub async fn archive(store: &WorkflowStore, claims: &Claims, id: &str) -> ApiResult<Workflow> {
    store
        .archive(&claims.tenant, id)
        .await
        .map_err(workflow_error)
}

pub async fn restore(store: &WorkflowStore, claims: &Claims, id: &str) -> ApiResult<Workflow> {
    store
        .restore(&claims.tenant, id)
        .await
        .map_err(workflow_error)
}

/// A workflow's versions, newest first.
pub async fn versions(
    store: &WorkflowStore,
    claims: &Claims,
    id: &str,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<(Vec<Version>, Option<String>)> {
    store
        .versions(
            &claims.tenant,
            id,
            limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
            cursor,
        )
        .await
        .map_err(workflow_error)
}

/// The heads of several of the caller's workflows at once; ids of other tenants or of no
/// workflow are simply absent from the answer.
pub async fn heads(
    store: &WorkflowStore,
    claims: &Claims,
    ids: &[String],
) -> ApiResult<Vec<Workflow>> {
    store
        .heads(&claims.tenant, ids)
        .await
        .map_err(workflow_error)
}
