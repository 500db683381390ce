//! The step worker: performs `StepScheduled` tasks (http, subworkflow, llm, mcp) and appends the
//! outcome.
//!
//! Exactly-once effect per attempt under redelivery: the worker first claims the attempt (a claim
//! record, or for llm and subworkflow steps a `StepStarted` event under the same key as its
//! idempotency key). A key already taken means this attempt was already taken: if
//! its outcome is recorded, the record is done; if not, the earlier run died mid-step, and the
//! attempt fails as `WorkerInterrupted` (retryable), so the step's retry policy decides. The side
//! effect itself never runs twice for one attempt.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::http::HttpExecutor;
use crate::domain::execution::{ExecutionEvent as E, ParentRef, StepError, Task};
use crate::domain::{secret_ref, validate_input};
use crate::events::{Envelope, ExpectedVersion, StoreError, StreamId};
use crate::executions::{repo::decode, stream_id, Cause, ExecutionRepo, RepoError};
use crate::secrets::Destination;
use crate::workflows::{WorkflowError, WorkflowStore};

pub struct Worker {
    pub repo: ExecutionRepo,
    pub workflows: WorkflowStore,
    pub http: HttpExecutor,
    pub llm: super::llm::Llm,
    pub mcp: crate::mcp::McpClients,
    /// The tenants' secrets that http headers and mcp arguments name.
    pub secrets: crate::secrets::TenantSecrets,
    /// Where the worker sees that an execution has ended, to drop its leftover tasks.
    projections: Option<crate::executions::Projections>,
    family: Family,
    /// One writer per stream within this process: a map's tasks finishing together would
    /// otherwise race each other for the stream's next version.
    writers: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Executions this worker decided for recently (see [`Worker::advance`]).
    states: super::states::StateCache,
    /// Bounds the tasks performed at once (see [`PERFORMING_AT_ONCE`]).
    performing: tokio::sync::Semaphore,
}

/// What performs tasks, and the secrets they may name.
pub struct Executors {
    pub http: HttpExecutor,
    pub llm: super::llm::Llm,
    pub mcp: crate::mcp::McpClients,
    pub secrets: crate::secrets::TenantSecrets,
}

/// Limits on a family of executions (`EngineConfig`): how deep subworkflows nest (a child of a
/// top-level execution is at depth 1), and how many one top-level execution may start in all.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub max_depth: u32,
    pub max_descendants: u32,
}

/// The error of a call cut off at the invocation's deadline: it may or may not have taken effect.
pub(crate) fn deadline_error() -> StepError {
    StepError::new(
        "Timeout",
        "the call was still running when the worker's invocation had to end; it may or may not have taken effect",
        true,
    )
}

/// `call`, cut off at `deadline` if there is one.
async fn bounded(
    deadline: Option<tokio::time::Instant>,
    call: impl std::future::Future<Output = Result<Value, StepError>>,
) -> Result<Value, StepError> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, call)
            .await
            .unwrap_or_else(|_| Err(deadline_error())),
        None => call.await,
    }
}

/// Execution states a warm worker keeps for deciding (see [`Worker::advance`]): fewer than the
/// orchestrator keeps, in a smaller function that performs calls beside them.
const WORKER_CACHED_STATES: usize = 64;

/// Tasks one worker environment performs at once, however its records carry them (a record
/// may carry a few, see `plan::MAX_CARRIED_TASKS`).
const PERFORMING_AT_ONCE: usize = 16;

/// The most places one step's request may name secrets in.
const MAX_SECRET_REFS: usize = 16;

/// Reading a secret, within the invocation's deadline.
async fn bounded_secret(
    deadline: Option<tokio::time::Instant>,
    read: impl std::future::Future<
        Output = Result<Option<crate::secrets::Resolved>, crate::secrets::SecretError>,
    >,
) -> Result<Option<crate::secrets::Resolved>, StepError> {
    let read = async {
        read.await.map_err(|e| {
            tracing::warn!(error = %e, "reading a tenant secret failed");
            StepError::new(
                "SecretUnavailable",
                "a secret the step names could not be read just now",
                true,
            )
        })
    };
    match deadline {
        Some(d) => tokio::time::timeout_at(d, read)
            .await
            .unwrap_or_else(|_| Err(deadline_error())),
        None => read.await,
    }
}

fn secret_error(message: String) -> StepError {
    StepError::new("InvalidSecretReference", message, false)
}

/// An answer with every secret the request used taken out (a server may echo a header back).
fn redacted(
    result: Result<Value, StepError>,
    used: &[(String, String)],
) -> Result<Value, StepError> {
    if used.is_empty() {
        return result;
    }
    match result {
        Ok(mut v) => {
            secret_ref::redact(&mut v, used);
            Ok(v)
        }
        Err(mut e) => {
            secret_ref::redact_error(&mut e.message, used);
            Err(e)
        }
    }
}

/// The budget reservation's name for one attempt: unique across executions.
fn budget_attempt(stream: &StreamId, task: &Task) -> String {
    attempt_name(stream, &task.key, task.epoch, task.attempt)
}

/// The one spelling of an attempt's name, shared with the sweep that finds its outcome.
pub(crate) fn attempt_name(stream: &StreamId, key: &str, epoch: u32, attempt: u32) -> String {
    format!("{stream}/{key}@{epoch}.{attempt}")
}

/// What the worker did with one record, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Performed,
    Duplicate,
    Interrupted,
    ChildStarted(String),
    Ignored,
    /// The execution had ended, or a redrive replaced the task's epoch: nothing was performed.
    Dropped,
}

impl Worker {
    pub fn new(
        repo: ExecutionRepo,
        workflows: WorkflowStore,
        executors: Executors,
        projections: Option<crate::executions::Projections>,
        family: Family,
    ) -> Arc<Self> {
        let Executors {
            http,
            llm,
            mcp,
            secrets,
        } = executors;
        Arc::new(Self {
            repo,
            workflows,
            http,
            llm,
            mcp,
            secrets,
            projections,
            family,
            writers: Default::default(),
            states: super::states::StateCache::with_capacity(WORKER_CACHED_STATES),
            performing: tokio::sync::Semaphore::new(PERFORMING_AT_ONCE),
        })
    }

    /// Whether this task is moot: its execution ended, a redrive replaced its epoch (as last
    /// projected, read consistently; what the orchestrator has appended but not yet projected
    /// is not seen, the same window as a task that had just started), or, where
    /// attempts were given up while in flight (a lost `join: any` branch, a lost task), the state
    /// no longer wants this attempt.
    /// Also returns the summary's `active_at` mark as read, for [`Worker::advance`].
    async fn moot(&self, stream: &StreamId, task: &Task) -> Result<(bool, Option<i64>), RepoError> {
        let Some(projections) = &self.projections else {
            return Ok((false, None));
        };
        let progress = projections
            .progress(stream.tenant(), stream.id(), true)
            .await
            .map_err(|e| RepoError::Store(StoreError::Backend(e.to_string())))?;
        let active_at = progress.and_then(|p| p.active_at);
        let moot = match progress {
            Some(p) if p.supersedes(task.epoch) => true,
            // Rare, so the full read is paid only where it can matter.
            Some(p) if p.stray_tasks => {
                let loaded = self.repo.load(stream).await?;
                !loaded.state.wants_task(&task.key, task.epoch, task.attempt)
            }
            _ => false,
        };
        Ok((moot, active_at))
    }

    fn writer(&self, stream: &StreamId) -> Arc<tokio::sync::Mutex<()>> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if writers.len() > 1000 {
            writers.retain(|_, w| Arc::strong_count(w) > 1);
        }
        writers.entry(stream.to_string()).or_default().clone()
    }

    async fn append_one(
        &self,
        stream: &StreamId,
        event: E,
        cause: &Cause<'_>,
        key: Option<String>,
    ) -> Result<crate::events::AppendResult, RepoError> {
        let writer = self.writer(stream);
        let _turn = writer.lock().await;
        self.repo.append_any(stream, vec![event], cause, key).await
    }

    /// Fails an execution whose task cannot be performed, as the orchestrator fails one whose
    /// events cannot be read (once per epoch; nothing after an ending).
    pub async fn fail_execution(
        &self,
        stream: &StreamId,
        record: &str,
        error: StepError,
    ) -> Result<(), String> {
        let Some(projections) = &self.projections else {
            return Err("this worker has no read models to fail an execution with".into());
        };
        super::Orchestrator::new(self.repo.clone(), projections.clone())
            .fail(stream, None, record, error, Utc::now())
            .await
            .map_err(|e| e.to_string())
    }

    /// Handles one `StepScheduled` envelope. `Err` only for failures worth redelivering.
    pub async fn handle(&self, envelope: &Envelope) -> Result<Done, RepoError> {
        self.handle_until(envelope, None).await
    }

    /// [`Worker::handle`], with the side effect cut off at `deadline` (what the invocation can
    /// spend on it): the attempt then fails as a retryable `Timeout` and is recorded like any
    /// outcome (budget settled, history written), instead of the invocation being killed with its
    /// bookkeeping half done.
    pub async fn handle_until(
        &self,
        envelope: &Envelope,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Done, RepoError> {
        let event = decode(envelope)?;
        // A task record, or an outcome carrying the tasks its worker decided on.
        let mut tasks: Vec<Task> = event.tasks().collect();
        match tasks.len() {
            0 => Ok(Done::Ignored),
            1 => self.perform(envelope, tasks.remove(0), deadline).await,
            _ => {
                let done = futures::future::join_all(
                    tasks
                        .into_iter()
                        .map(|task| self.perform(envelope, task, deadline)),
                )
                .await;
                // Redelivered if any failed: the others are then duplicates, skipped.
                let mut all = done.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok(if all.iter().all(|d| *d == all[0]) {
                    all.remove(0)
                } else {
                    Done::Performed
                })
            }
        }
    }

    /// Performs one task of the record `envelope`.
    async fn perform(
        &self,
        envelope: &Envelope,
        task: Task,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Done, RepoError> {
        let _slot = self
            .performing
            .acquire()
            .await
            .map_err(|e| RepoError::Store(StoreError::Backend(e.to_string())))?;
        let stream = &envelope.stream_id;
        let tenant = stream.tenant().to_owned();
        let correlation = envelope.metadata.correlation_id.clone();
        let cause = Cause {
            tenant: &tenant,
            actor: "worker",
            correlation_id: &correlation,
            causation_id: Some(&envelope.event_id),
            at: Utc::now(),
        };
        let (moot, active_at) = self.moot(stream, &task).await?;
        if moot {
            tracing::info!(stream = %stream, step = %task.step, epoch = task.epoch, "the execution has ended or moved to a later epoch; task dropped");
            return Ok(Done::Dropped);
        }
        let child = (task.kind == "subworkflow")
            .then(|| crate::engine::derived_id(&[stream.as_str(), &task.attempt_id()]));
        let claim_key = format!("started:{}", task.attempt_id());
        // http and mcp calls are bounded by their timeouts: they are claimed without a
        // `StepStarted` event (1 write unit instead of a 4-unit transaction) and show as scheduled
        // until their outcome. llm steps (long, and holding budget) and children keep the event.
        let taken = if matches!(task.kind.as_str(), "http" | "mcp") {
            !self.repo.store().claim(stream, &claim_key).await?
        } else {
            let started = self
                .append_one(
                    stream,
                    E::StepStarted {
                        key: task.key.clone(),
                        step: task.step.clone(),
                        epoch: task.epoch,
                        attempt: task.attempt,
                        items: None,
                        child_execution_id: child.clone(),
                    },
                    &cause,
                    Some(claim_key),
                )
                .await?;
            if let Some(child) = child {
                // Starting a child is idempotent by its id; its end reports back to this step.
                return self.start_child(stream, &task, &child, &cause).await;
            }
            started.replayed
        };
        if taken {
            // The outcome comes after the task's own record in the stream.
            if self
                .outcome_recorded(stream, envelope.version, &task)
                .await?
            {
                return Ok(Done::Duplicate);
            }
            if task.kind == "llm" {
                // Money held by the dead attempt goes back; no usage was ever reported for it.
                match self
                    .llm
                    .release(&tenant, &budget_attempt(stream, &task))
                    .await
                {
                    Ok(true) => {
                        tracing::warn!(step = %task.step, "released the budget reservation of an interrupted attempt")
                    }
                    Ok(false) => {}
                    Err(e) => return Err(RepoError::Store(StoreError::Backend(e))),
                }
            }
            let error = StepError::new(
                "WorkerInterrupted",
                "the worker stopped during this attempt; its effect may or may not have happened",
                true,
            );
            self.record(stream, &task, Err(error), &cause).await?;
            return Ok(Done::Interrupted);
        }
        let outcome = match task.kind.as_str() {
            "http" => {
                // Per step instance and epoch, not per attempt: retries repeat the key, a
                // deliberate redrive gets a new one.
                let key = super::derived_id(&[stream.as_str(), &task.key, &task.epoch.to_string()]);
                let result = match self.with_secrets(&tenant, &task.request, deadline).await {
                    Ok((request, used)) => redacted(
                        bounded(deadline, self.http.call(&request, Some(&key))).await,
                        &used,
                    ),
                    Err(e) => Err(e),
                };
                task.outcome(result)
            }
            "llm" => match self
                .llm
                .call(
                    &task.request,
                    &tenant,
                    &budget_attempt(stream, &task),
                    deadline,
                )
                .await
            {
                (result, Some(spent)) => E::outcome_with_usage(
                    task.key.clone(),
                    task.step.clone(),
                    task.epoch,
                    task.attempt,
                    result.and_then(|v| {
                        crate::domain::execution::plan::fits(&v, "output", "OutputTooLarge")
                            .map(|_| v)
                    }),
                    spent,
                ),
                (result, None) => task.outcome(result),
            },
            "mcp" => {
                let result = match self.with_secrets(&tenant, &task.request, deadline).await {
                    Ok((request, used)) => redacted(
                        bounded(deadline, self.mcp.call(&tenant, &request)).await,
                        &used,
                    ),
                    Err(e) => Err(e),
                };
                task.outcome(result)
            }
            other => task.outcome(Err(StepError::new(
                "UnsupportedStep",
                format!("the worker cannot perform {other} steps"),
                false,
            ))),
        };
        if matches!(task.kind.as_str(), "http" | "mcp") {
            self.record_advancing(stream, &task, outcome, &cause, active_at)
                .await?;
        } else {
            self.record_event(stream, &task, outcome, &cause).await?;
        }
        Ok(Done::Performed)
    }

    /// Appends an http or mcp attempt's outcome together with what it leads to, when that is
    /// plain successors only (`plan::worker_may_decide`): one event at the stream's exact next
    /// version, one write for the outcome and the next tasks, where the orchestrator's turn
    /// would write them apart (issue 14). Anything else (another writer got there first,
    /// decisions that are the orchestrator's, an event too large, a failed read) falls back to
    /// the outcome alone, and the orchestrator decides as before.
    async fn record_advancing(
        &self,
        stream: &StreamId,
        task: &Task,
        outcome: E,
        cause: &Cause<'_>,
        active_at: Option<i64>,
    ) -> Result<(), RepoError> {
        // Stamped when it is written, whichever way it goes (again below), so its times do not
        // depend on the way.
        let cause = Cause {
            at: Utc::now(),
            ..*cause
        };
        let Some(projections) = &self.projections else {
            return self.record_event(stream, task, outcome, &cause).await;
        };
        if matches!(outcome, E::StepSucceeded { .. }) && projections.workers_decide().await {
            let advanced = {
                let writer = self.writer(stream);
                let _turn = writer.lock().await;
                self.advance(stream, task, &outcome, &cause).await
            };
            match advanced {
                Ok(true) => {
                    // No orchestrator turn follows such an outcome: the worker keeps the
                    // execution's activity mark fresh for the stalled-execution sweep.
                    let now = Utc::now();
                    if crate::executions::projection::activity_due(active_at, now) {
                        if let Err(e) = projections
                            .touch_active(stream.tenant(), stream.id(), now)
                            .await
                        {
                            tracing::warn!(stream = %stream, error = %e, "activity mark not refreshed");
                        }
                    }
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "deciding after the outcome failed; the outcome goes alone");
                }
            }
        }
        let cause = Cause {
            at: Utc::now(),
            ..cause
        };
        self.record_event(stream, task, outcome, &cause).await
    }

    /// `true` when the outcome and its decisions were appended. First from this worker's own
    /// last write, unread (in a chain of steps nothing else was appended since, and the
    /// exact-version append checks it: a lost race costs one refused write), then once more from
    /// the store.
    async fn advance(
        &self,
        stream: &StreamId,
        task: &Task,
        outcome: &E,
        cause: &Cause<'_>,
    ) -> Result<bool, RepoError> {
        use crate::domain::execution::{decide, evolve, plan::worker_may_decide};
        // Decided from the outcome as it will read back from the store (DynamoDB keeps no
        // integer/float distinction), so the decisions equal those a replay would make.
        let (event_type, payload) = outcome.clone().into_parts();
        let outcome = &E::from_parts(&event_type, &crate::events::as_stored(&payload)?)
            .map_err(|e| RepoError::Store(StoreError::Decode(e.to_string())))?;
        for read in [false, true] {
            let mut loaded = if read {
                self.states.load(&self.repo, stream).await?
            } else {
                match self.states.peek(stream) {
                    Some(l) => l,
                    None => continue,
                }
            };
            let state = &loaded.state;
            if !state.wants_task(&task.key, task.epoch, task.attempt) {
                continue; // the cached state is behind (or, read, the task is moot)
            }
            // Stamped now: replay applies the event and its decisions at this time.
            let cause = Cause {
                at: Utc::now(),
                ..*cause
            };
            // A planning bug must not lose the outcome (its effect happened): the outcome then
            // goes alone, and the orchestrator's turn meets the bug and fails the execution.
            let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut next = state.clone();
                evolve(&mut next, state.version + 1, cause.at, outcome);
                decide(&next, cause.at)
            }));
            let Ok((after, decided)) = planned else {
                tracing::error!(stream = %stream, "deciding after the outcome panicked; the outcome goes alone");
                return Ok(false);
            };
            if !worker_may_decide(&after, &decided) {
                continue; // from the store, the same answer ends the loop
            }
            let Some(event) = outcome.clone().with_decisions(decided) else {
                return Ok(false);
            };
            // What is kept is what a replay of the stored event gives (its numbers as DynamoDB
            // keeps them), so later decisions from this state equal those from the history.
            let (event_type, payload) = event.into_parts();
            let event = E::from_parts(&event_type, &crate::events::as_stored(&payload)?)
                .map_err(|e| RepoError::Store(StoreError::Decode(e.to_string())))?;
            let kept = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut kept = state.clone();
                evolve(&mut kept, state.version + 1, cause.at, &event);
                kept
            }));
            let Ok(kept) = kept else {
                tracing::error!(stream = %stream, "applying the decided event panicked; the outcome goes alone");
                return Ok(false);
            };
            let expected = ExpectedVersion::Exact(state.version);
            match self
                .repo
                .append(stream, expected, vec![event], &cause, None)
                .await
            {
                Ok(r) => {
                    loaded.state = kept;
                    loaded.state.version = r.last_version;
                    let snapshot_version = self.repo.maybe_snapshot(stream, &loaded).await?;
                    self.states
                        .remember(stream, &loaded.state, snapshot_version);
                    return Ok(true);
                }
                Err(RepoError::Store(StoreError::Conflict { .. })) if !read => {}
                Err(RepoError::Store(
                    StoreError::Conflict { .. } | StoreError::TooLarge { .. },
                )) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// The request as sent: the secrets it names (at the pointers the planner listed) put in,
    /// each only if its admin allowed this destination. Also returns them by name, to take them
    /// out of the answer again.
    async fn with_secrets(
        &self,
        tenant: &str,
        request: &Value,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(Value, Vec<(String, String)>), StepError> {
        let Some(refs) = request.get("secret_refs").and_then(Value::as_array) else {
            return Ok((request.clone(), Vec::new()));
        };
        if refs.len() > MAX_SECRET_REFS {
            return Err(secret_error(format!(
                "a step may name at most {MAX_SECRET_REFS} secrets"
            )));
        }
        let host = request
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let destination = match (request.get("server").and_then(Value::as_str), &host) {
            (Some(server), _) => Destination::McpServer(server),
            (None, Some(host)) => Destination::Host(host),
            (None, None) => return Err(secret_error("the request has no destination".into())),
        };
        let mut sent = request.clone();
        let mut used: Vec<(String, String)> = Vec::new();
        for pointer in refs.iter().filter_map(Value::as_str) {
            let Some(Value::String(text)) = sent.pointer(pointer).cloned() else {
                continue;
            };
            for name in secret_ref::names(&text).map_err(secret_error)? {
                if used.iter().any(|(n, _)| n == name) {
                    continue;
                }
                let resolved = bounded_secret(deadline, self.secrets.resolve(tenant, name))
                    .await?
                    .ok_or_else(|| {
                        StepError::new(
                            "SecretNotFound",
                            format!(
                                "secret `{name}` is not set for this tenant (PUT /secrets/{name})"
                            ),
                            false,
                        )
                    })?;
                if !resolved.info.allows(destination) {
                    let to = match destination {
                        Destination::Host(h) => format!("host `{h}`"),
                        Destination::McpServer(s) => format!("MCP server `{s}`"),
                    };
                    return Err(StepError::new(
                        "SecretNotAllowed",
                        format!("secret `{name}` may not be sent to {to}: its admin lists where it may go (`hosts`, `mcp_servers`)"),
                        false,
                    ));
                }
                used.push((name.to_owned(), resolved.value));
            }
            let filled = secret_ref::substitute(&text, |n| {
                used.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
            })
            .map_err(secret_error)?;
            if let Some(slot) = sent.pointer_mut(pointer) {
                *slot = Value::String(filled);
            }
        }
        if let Some(map) = sent.as_object_mut() {
            map.remove("secret_refs");
        }
        Ok((sent, used))
    }

    async fn outcome_recorded(
        &self,
        stream: &StreamId,
        from: u64,
        task: &Task,
    ) -> Result<bool, RepoError> {
        let events = self.repo.store().read_from(stream, from).await?;
        for envelope in &events {
            match decode(envelope)? {
                E::StepSucceeded {
                    key,
                    epoch,
                    attempt,
                    ..
                }
                | E::StepFailed {
                    key,
                    epoch,
                    attempt,
                    ..
                } if key == task.key && epoch == task.epoch && attempt == task.attempt => {
                    return Ok(true)
                }
                _ => {}
            }
        }
        Ok(false)
    }

    async fn record(
        &self,
        stream: &StreamId,
        task: &Task,
        result: Result<Value, StepError>,
        cause: &Cause<'_>,
    ) -> Result<(), RepoError> {
        self.record_event(stream, task, task.outcome(result), cause)
            .await
    }

    /// Appends the outcome; an output too large for the event store fails the step clearly
    /// instead. Only one outcome per attempt ever counts (`evolve` applies the first), so a
    /// second one (a duplicate worker that took the attempt for interrupted while it ran) changes
    /// nothing, and an http or mcp outcome is a single conditional put. An llm outcome carries
    /// usage, which every outcome event would add to the ledger: it is written once per attempt
    /// (an idempotency record in the same transaction).
    async fn record_event(
        &self,
        stream: &StreamId,
        task: &Task,
        outcome: E,
        cause: &Cause<'_>,
    ) -> Result<(), RepoError> {
        let key = (task.kind == "llm").then(|| format!("outcome:{}", task.attempt_id()));
        match self.append_one(stream, outcome, cause, key.clone()).await {
            Err(RepoError::Store(StoreError::TooLarge { detail, .. })) => {
                let error = StepError::new(
                    "OutputTooLarge",
                    {
                        tracing::warn!(stream = %stream, %detail, "output too large");
                        "the step's output does not fit in one event (400 KB)".to_owned()
                    },
                    false,
                );
                self.append_one(stream, task.outcome(Err(error)), cause, key)
                    .await?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    async fn start_child(
        &self,
        stream: &StreamId,
        task: &Task,
        child: &str,
        cause: &Cause<'_>,
    ) -> Result<Done, RepoError> {
        let workflow_id = task.request["workflow_id"].as_str().unwrap_or_default();
        let tenant = stream.tenant();
        let depth = task.request["depth"].as_u64().unwrap_or(1) as u32;
        let root = task.request["root"]
            .as_str()
            .unwrap_or_else(|| stream.id())
            .to_owned();
        let refuse = |kind: &str, message: String| Err(StepError::new(kind, message, false));
        let Family {
            max_depth,
            max_descendants,
        } = self.family;
        if depth > max_depth {
            let e = refuse(
                "SubworkflowTooDeep",
                format!("subworkflows nest at most {max_depth} deep"),
            );
            self.record(stream, task, e, cause).await?;
            return Ok(Done::Performed);
        }
        let version = match self.workflows.get(tenant, workflow_id).await {
            Ok(w) if w.status == crate::workflows::WorkflowStatus::Archived => {
                let e = refuse(
                    "SubworkflowArchived",
                    format!("workflow {workflow_id} is archived and cannot be started"),
                );
                self.record(stream, task, e, cause).await?;
                return Ok(Done::Performed);
            }
            Ok(w) => {
                let v = task.request["version"]
                    .as_u64()
                    .map_or(w.latest_version, |v| v as u32);
                self.workflows.version(tenant, workflow_id, v).await
            }
            Err(e) => Err(e),
        };
        let version = match version {
            Ok(v) => v,
            Err(WorkflowError::Backend(b)) => return Err(RepoError::Store(StoreError::Backend(b))),
            Err(e) => {
                self.record(
                    stream,
                    task,
                    Err(StepError::new("SubworkflowNotFound", e.to_string(), false)),
                    cause,
                )
                .await?;
                return Ok(Done::Performed);
            }
        };
        let input = task.request["input"].clone();
        let problems = validate_input(&version.definition, &input);
        if !problems.is_empty() {
            let detail: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.pointer, p.message))
                .collect();
            self.record(
                stream,
                task,
                Err(StepError::new("InvalidInput", detail.join("; "), false)),
                cause,
            )
            .await?;
            return Ok(Done::Performed);
        }
        let parent = ParentRef {
            execution_id: stream
                .as_str()
                .rsplit('#')
                .next()
                .unwrap_or_default()
                .to_owned(),
            key: task.key.clone(),
            epoch: task.epoch,
            attempt: task.attempt,
            depth,
            root: Some(root.clone()),
        };
        let child_stream = stream_id(tenant, child)?;
        // Counted once per child: a redelivery finds the child already started. (A crash between
        // the count and the start counts one child too many: the cap errs on the safe side.)
        if let Some(projections) = &self.projections {
            if self.repo.store().last_version(&child_stream).await? == 0 {
                let counted = projections
                    .count_descendant(tenant, &root, max_descendants)
                    .await
                    .map_err(|e| RepoError::Store(StoreError::Backend(e.to_string())))?;
                if !counted {
                    let e = refuse(
                        "TooManyDescendants",
                        format!(
                            "execution {root} already started {max_descendants} subworkflow executions"
                        ),
                    );
                    self.record(stream, task, e, cause).await?;
                    return Ok(Done::Performed);
                }
            }
        }
        let event = crate::engine::started(child, &version, input, Some(parent));
        match self
            .repo
            .append(
                &child_stream,
                ExpectedVersion::NoStream,
                vec![event],
                cause,
                None,
            )
            .await
        {
            Ok(_) | Err(RepoError::Store(StoreError::Conflict { .. })) => {
                // The parent may have ended (or given this attempt up) while the child was being
                // started, after its last look: then nobody waits for the child.
                if self.moot(stream, task).await?.0 {
                    crate::engine::orchestrator::cancel_running(
                        &self.repo,
                        tenant,
                        child,
                        "parent",
                        "its parent execution ended while it was being started",
                        chrono::Utc::now(),
                    )
                    .await?;
                }
                Ok(Done::ChildStarted(child.to_owned()))
            }
            // The child's definition and input do not fit its first event: the step fails
            // clearly instead of the task being dropped and the parent waiting for ever.
            Err(RepoError::Store(StoreError::TooLarge { detail, .. })) => {
                let error = StepError::new(
                    "InvalidInput",
                    {
                        tracing::warn!(%detail, "child too large");
                        "the child execution cannot be stored (400 KB per event)".to_owned()
                    },
                    false,
                );
                self.record(stream, task, Err(error), cause).await?;
                Ok(Done::Performed)
            }
            Err(e) => Err(e),
        }
    }
}
