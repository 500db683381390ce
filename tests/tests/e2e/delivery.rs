//! Delivery semantics with the stream functions driven by hand (no background mapping): a
//! redelivered batch repeats no side effect and appends nothing, a worker that dies mid-step
//! leads to a retry under the step's policy, an unreadable event fails only its execution, and
//! a rebuild of the read models from events equals the live ones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event;
use serde_json::{json, Value};
use shared::domain::execution::Summary;
use shared::events::{AppendRequest, ExpectedVersion, Metadata, NewEvent};

use crate::support::App;
/// The worker's template `Timeout`: the time a batch has.
const WORKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

use crate::workflows::{Client, Peer};

/// The template's stream functions, configured as the runner configures them.
struct Functions {
    orchestrator: orchestrator::Handler,
    worker: worker::Handler,
    timer: timer::Handler,
    worker_filters: Vec<Value>,
    reader: wfe_local::streams::StreamReader,
    services: shared::engine::Services,
}

impl Functions {
    async fn new(app: &App) -> Self {
        let env: BTreeMap<String, String> =
            [("HTTP_ALLOW_PRIVATE_NETWORKS".to_owned(), "true".to_owned())].into();
        let config =
            |id: &str| wfe_local::runner::function_config(&app.template, id, &env).unwrap();
        let mapping = wfe_local::esm::mappings(&app.template)
            .into_iter()
            .find(|m| m.function == "WorkerFunction")
            .unwrap();
        let tables = app.template.tables().unwrap();
        let dynamodb = aws_sdk_dynamodb::Client::new(&app.sdk);
        let arn = wfe_local::streams::stream_arn(&dynamodb, &tables.events)
            .await
            .unwrap();
        let reader = wfe_local::streams::StreamReader::from_start(
            aws_sdk_dynamodbstreams::Client::new(&app.sdk),
            &arn,
        )
        .await
        .unwrap();
        Self {
            orchestrator: orchestrator::Handler::new(&config("OrchestratorFunction"), &app.sdk)
                .unwrap(),
            worker: worker::Handler::new(&config("WorkerFunction"), &app.sdk)
                .await
                .unwrap(),
            timer: timer::Handler::new(&config("TimerFunction"), &app.sdk).unwrap(),
            worker_filters: mapping.filters,
            reader,
            services: shared::engine::Services::new(&config("OrchestratorFunction"), &app.sdk)
                .unwrap(),
        }
    }

    fn event(records: &[Value]) -> Event {
        serde_json::from_value(json!({"Records": records})).unwrap()
    }

    fn tasks(&self, records: &[Value]) -> Vec<Value> {
        records
            .iter()
            .filter(|r| {
                self.worker_filters
                    .iter()
                    .any(|f| wfe_local::esm::matches(f, r))
            })
            .cloned()
            .collect()
    }

    /// New records since the last call.
    async fn poll(&mut self) -> Vec<Value> {
        self.reader.poll(1000).await.unwrap()
    }

    /// Delivers new records to both functions and fires due timers until `done` (deadline 30 s);
    /// returns every record delivered.
    async fn pump(&mut self, done: impl AsyncFn() -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut all = Vec::new();
        loop {
            let records = self.poll().await;
            if !records.is_empty() {
                let r = self.orchestrator.handle(Self::event(&records)).await;
                assert!(r.batch_item_failures.is_empty());
                let tasks = self.tasks(&records);
                if !tasks.is_empty() {
                    self.worker
                        .handle(Self::event(&tasks), WORKER_TIMEOUT)
                        .await;
                }
                all.extend(records);
            }
            self.timer.handle(Duration::from_secs(30)).await.unwrap();
            if done().await {
                return all;
            }
            assert!(Instant::now() < deadline, "never done");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A worker configured with `env` working on `tasks` in the background, for a test to kill.
async fn doomed_worker(
    app: &App,
    env: &BTreeMap<String, String>,
    tasks: &[Value],
) -> tokio::task::JoinHandle<aws_lambda_events::streams::DynamoDbEventResponse> {
    let config = wfe_local::runner::function_config(&app.template, "WorkerFunction", env).unwrap();
    let worker = worker::Handler::new(&config, &app.sdk).await.unwrap();
    let event = Functions::event(tasks);
    tokio::spawn(async move { worker.handle(event, WORKER_TIMEOUT).await })
}

async fn status(c: &Client<'_>, id: &str) -> String {
    c.execution(id).await["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_redelivered_batch_repeats_no_http_call_and_appends_nothing() {
    let app = App::start("redeliver", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-redeliver").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "once", "start": "call", "steps": {
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/once", peer.base), "body": {"x": 1}, "next": "again"},
            "again": {"type": "http", "method": "POST", "url": format!("{}/echo/once", peer.base), "body": {"x": 2}}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let records = f.pump(async || status(&c, &id).await == "succeeded").await;
    assert_eq!(peer.calls("once"), 2);
    let before = c.history(&id).await.len();

    // Lambda delivers at least once: the same records again, to both functions. The second
    // task came inside the first step's outcome (its worker decided it).
    let tasks = f.tasks(&records);
    assert_eq!(tasks.len(), 2, "two scheduled steps");
    assert_eq!(
        tasks[1]["dynamodb"]["NewImage"]["event_type"]["S"], "StepSucceeded",
        "{:#}",
        tasks[1]
    );
    for _ in 0..2 {
        let r = f
            .worker
            .handle(Functions::event(&tasks), WORKER_TIMEOUT)
            .await;
        assert!(r.batch_item_failures.is_empty());
        let r = f.orchestrator.handle(Functions::event(&records)).await;
        assert!(r.batch_item_failures.is_empty());
    }
    assert_eq!(peer.calls("once"), 2, "no HTTP call was repeated");
    assert_eq!(c.history(&id).await.len(), before, "nothing was appended");
    assert_eq!(status(&c, &id).await, "succeeded");
}

#[tokio::test]
async fn a_worker_that_dies_mid_step_leads_to_a_retry_under_the_policy() {
    let app = App::start("crash", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-crash").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "crash", "start": "call", "steps": {
            "call": {"type": "http", "url": format!("{}/hold/crash/1", peer.base),
                     "retry": {"max_attempts": 2, "initial_interval_ms": 100}}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    let scheduled = f.poll().await;
    let tasks = f.tasks(&scheduled);
    assert_eq!(tasks.len(), 1);

    // The worker takes the task and dies while the call is in flight.
    let env = [("HTTP_ALLOW_PRIVATE_NETWORKS".to_owned(), "true".to_owned())].into();
    let running = doomed_worker(&app, &env, &tasks).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer.calls("crash") == 0 {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();

    // Lambda redelivers the batch; the attempt is recognised as interrupted, not run again.
    f.worker
        .handle(Functions::event(&tasks), WORKER_TIMEOUT)
        .await;
    assert_eq!(peer.calls("crash"), 1);
    f.pump(async || status(&c, &id).await != "running").await;
    let e = c.execution(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(peer.calls("crash"), 2, "the retry ran the call once more");
    let history = c.history(&id).await;
    assert!(
        history
            .iter()
            .any(|e| e["type"] == "StepFailed"
                && e["payload"]["error"]["kind"] == "WorkerInterrupted"),
        "{history:#?}"
    );
}

#[tokio::test]
async fn a_worker_that_dies_mid_llm_call_gives_its_budget_reservation_back() {
    use shared::engine::budget::{BudgetConfig, Budgets, Scope};
    let providers = crate::llm::Providers::start().await;
    let app = App::start("crash-llm", &[]).await;
    let tenant = "t-crash-llm";
    let c = Client::new(&app, tenant).await;
    let budgets = Budgets::new(
        aws_sdk_dynamodb::Client::new(&app.sdk),
        app.template.tables().unwrap().state,
    );
    let limit = BudgetConfig {
        monthly_usd: Some(1.0),
        monthly_tokens: Some(100_000),
    };
    budgets
        .set(tenant, &Scope::Tenant, &limit, chrono::Utc::now(), (0.0, 0))
        .await
        .unwrap();
    let held = async || {
        budgets
            .usage(tenant, &Scope::Tenant, chrono::Utc::now())
            .await
            .unwrap()
    };
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "crash", "start": "ask", "steps": {
            "ask": {"type": "llm", "provider": "openai", "model": "gpt-4o", "prompt": "hang", "max_tokens": 1000}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    let scheduled = f.poll().await;
    let tasks = f.tasks(&scheduled);
    assert_eq!(tasks.len(), 1);

    // The worker reserves, calls the provider and dies while the call is in flight.
    let env: BTreeMap<String, String> = [
        ("OPENAI_API_KEY".to_owned(), "sk-crash".to_owned()),
        ("OPENAI_BASE_URL".to_owned(), providers.base.clone()),
    ]
    .into();
    let running = doomed_worker(&app, &env, &tasks).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while providers.seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    let during = held().await;
    assert!(
        during.reserved_usd > 0.0 && during.reserved_tokens > 1000,
        "{during:?}"
    );

    // Redelivered: the attempt is interrupted, and what it held is given back, once.
    for _ in 0..2 {
        f.worker
            .handle(Functions::event(&tasks), WORKER_TIMEOUT)
            .await;
        let after = held().await;
        assert_eq!(
            (after.reserved_usd, after.reserved_tokens),
            (0.0, 0),
            "{after:?}"
        );
        assert_eq!((after.spent_usd, after.spent_tokens), (0.0, 0), "{after:?}");
        assert_eq!(after.available_usd, Some(1.0));
        assert_eq!(after.available_tokens, Some(100_000));
    }
    f.pump(async || status(&c, &id).await != "running").await;
    assert_eq!(c.execution(&id).await["error"]["kind"], "WorkerInterrupted");
    assert_eq!(providers.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreadable_task_fails_its_execution_though_only_the_worker_is_sent_it() {
    let app = App::start("poison-task", &[]).await;
    let tenant = "t-poison-task";
    let c = Client::new(&app, tenant).await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "gate", "start": "ask", "steps": {"ask": {"type": "approval"}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    f.pump(async || c.execution(&id).await["awaiting_approval"] == json!(["ask"]))
        .await;
    // A task whose payload does not match its type: the orchestrator's filter leaves task
    // records to the worker alone.
    let stream = shared::executions::stream_id(tenant, &id).unwrap();
    f.services
        .repo
        .store()
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                event_type: "StepScheduled".into(),
                schema_version: 1,
                payload: json!({"key": 42}).as_object().unwrap().clone(),
                metadata: Metadata {
                    tenant: tenant.into(),
                    actor: None,
                    correlation_id: id.clone(),
                    causation_id: None,
                    occurred_at: chrono::Utc::now(),
                },
            }],
            idempotency_key: None,
        })
        .await
        .unwrap();
    let store = f.services.repo.store().clone();
    let failures = async || {
        store
            .read_from(&stream, 1)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "ExecutionFailed")
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while failures().await.is_empty() {
        assert!(Instant::now() < deadline, "the execution was never failed");
        f.pump(async || true).await;
    }
    let failed = failures().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload["error"]["kind"], "OrchestrationError");
    // Redelivery fails it only once.
    f.pump(async || true).await;
    assert_eq!(failures().await.len(), 1);
}

#[tokio::test]
async fn an_unreadable_event_fails_its_execution_and_never_blocks_the_stream() {
    let app = App::start("poison", &[]).await;
    let c = Client::new(&app, "t-poison").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "fine", "start": "t", "steps": {"t": {"type": "template", "template": "ok"}}}))
        .await;
    // An event whose payload does not match its type (a bug, or a hand-edited table).
    let stream = shared::executions::stream_id("t-poison", "poisoned").unwrap();
    f.services
        .repo
        .store()
        .append(AppendRequest {
            stream_id: stream.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                event_type: "ExecutionStarted".into(),
                schema_version: 1,
                payload: json!({"workflow": 42}).as_object().unwrap().clone(),
                metadata: Metadata {
                    tenant: "t-poison".into(),
                    actor: None,
                    correlation_id: "poisoned".into(),
                    causation_id: None,
                    occurred_at: chrono::Utc::now(),
                },
            }],
            idempotency_key: None,
        })
        .await
        .unwrap();
    let good = c.start(&wf, json!({})).await;
    f.pump(async || status(&c, &good).await == "succeeded")
        .await;
    let events = f.services.repo.store().read_from(&stream, 1).await.unwrap();
    let failed = events
        .iter()
        .find(|e| e.event_type == "ExecutionFailed")
        .expect("the poisoned execution failed");
    assert_eq!(failed.payload["error"]["kind"], "OrchestrationError");
    assert!(
        failed.payload["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ExecutionStarted"),
        "{:?}",
        failed.payload
    );
    // Redelivery fails it only once.
    f.pump(async || true).await;
    let again = f.services.repo.store().read_from(&stream, 1).await.unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|e| e.event_type == "ExecutionFailed")
            .count(),
        1
    );
}

#[tokio::test]
async fn rebuilt_projections_equal_the_live_ones() {
    let app = App::start("rebuild", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-rebuild").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "mixed", "start": "route", "steps": {
            "route": {"type": "condition", "branches": [{"when": "input.fail", "next": "bad"}], "default": "call"},
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/rebuild", peer.base), "body": "{{ input }}"},
            "bad": {"type": "fail", "error": "Requested", "cause": "the input asked for it"}}}))
        .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(c.start(&wf, json!({"fail": i % 2 == 1, "i": i})).await);
    }
    let check = ids.clone();
    f.pump(async || {
        for id in &check {
            if status(&c, id).await == "running" {
                return false;
            }
        }
        true
    })
    .await;
    // Let the orchestrator see its own last appends, so the live projection is complete.
    f.pump(async || true).await;
    let projections = &f.services.projections;
    let live_stats = projections.workflow_stats("t-rebuild", &wf).await.unwrap();
    let mut live = Vec::new();
    for id in &ids {
        let summary = projections
            .summary("t-rebuild", id)
            .await
            .unwrap()
            .expect("projected");
        // The live projection is what a replay says...
        let stream = shared::executions::stream_id("t-rebuild", id).unwrap();
        let replayed = Summary::of(&f.services.repo.load(&stream).await.unwrap().state).listing();
        assert_eq!(summary, replayed, "summary of {id}");
        live.push(summary);
        // ...and dropping it loses nothing.
        projections.delete_summary("t-rebuild", id).await.unwrap();
    }
    assert_eq!(
        projections
            .workflow_stats("t-rebuild", &wf)
            .await
            .unwrap()
            .runs,
        0
    );
    let tables = app.template.tables().unwrap();
    let written = shared::engine::rebuild::rebuild_summaries(
        &aws_sdk_dynamodb::Client::new(&app.sdk),
        &tables.events,
        &f.services.repo,
        projections,
        Some("t-rebuild"),
    )
    .await
    .unwrap();
    assert_eq!(written, ids.len());
    for (id, before) in ids.iter().zip(&live) {
        let rebuilt = projections
            .summary("t-rebuild", id)
            .await
            .unwrap()
            .expect("rebuilt");
        assert_eq!(&rebuilt, before, "rebuilt summary of {id}");
    }
    let stats = projections.workflow_stats("t-rebuild", &wf).await.unwrap();
    assert_eq!(stats, live_stats);
    assert_eq!((stats.runs, stats.succeeded, stats.failed), (4, 2, 2));
}

#[tokio::test]
async fn a_task_of_an_execution_cancelled_before_the_worker_got_to_it_is_not_performed() {
    let peer = Peer::start().await;
    let app = App::start("cancel-drop", &[]).await;
    let c = Client::new(&app, "t-cancel-drop").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "late", "start": "call", "steps": {
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/late", peer.base)}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    let scheduled = f.poll().await;
    let tasks = f.tasks(&scheduled);
    assert_eq!(tasks.len(), 1);
    // The worker's batch is delayed; the execution is cancelled meanwhile.
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    let before = c.history(&id).await.len();
    let r = f
        .worker
        .handle(Functions::event(&tasks), WORKER_TIMEOUT)
        .await;
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(peer.calls("late"), 0, "no side effect after the cancel");
    let history = c.history(&id).await;
    assert_eq!(history.len(), before, "nothing appended after the end");
    assert_eq!(status(&c, &id).await, "cancelled");
}

#[tokio::test]
async fn a_slow_call_is_cut_off_before_the_invocation_times_out_and_the_others_finish() {
    let peer = Peer::start().await;
    let app = App::start("deadline", &[]).await;
    let c = Client::new(&app, "t-deadline").await;
    let mut f = Functions::new(&app).await;
    let slow = c
        .create(json!({"name": "slow", "start": "call", "steps": {
            "call": {"type": "http", "url": format!("{}/hold/slow/1", peer.base),
                     "retry": {"max_attempts": 2, "initial_interval_ms": 100}}}}))
        .await;
    let fast = c
        .create(json!({"name": "fast", "start": "call", "steps": {
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/fast", peer.base)}}}))
        .await;
    let slow_id = c.start(&slow, json!({})).await;
    let fast_id = c.start(&fast, json!({})).await;
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    let scheduled = f.poll().await;
    let tasks = f.tasks(&scheduled);
    assert_eq!(tasks.len(), 2);

    // One invocation with 3 s left: the slow call never answers, the fast one does. The slow
    // call is cut off in time for its bookkeeping: the attempt is recorded as a retryable
    // Timeout, nothing is handed back half done.
    let began = Instant::now();
    let r = f
        .worker
        .handle(Functions::event(&tasks), Duration::from_secs(3))
        .await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "returned before the timeout: {:?}",
        began.elapsed()
    );
    assert!(
        r.batch_item_failures.is_empty(),
        "{:?}",
        r.batch_item_failures
    );
    assert_eq!(peer.calls("fast"), 1);
    let history = c.history(&slow_id).await;
    let cut = history
        .iter()
        .find(|e| e["type"] == "StepFailed")
        .expect("the cut-off attempt is recorded");
    assert_eq!(cut["payload"]["error"]["kind"], "Timeout", "{cut:#}");

    // Its retry answers.
    f.pump(async || {
        status(&c, &slow_id).await != "running" && status(&c, &fast_id).await != "running"
    })
    .await;
    assert_eq!(status(&c, &fast_id).await, "succeeded");
    assert_eq!(status(&c, &slow_id).await, "succeeded");
    assert_eq!(peer.calls("slow"), 2);
}

#[tokio::test]
async fn the_sweep_moves_on_an_execution_whose_records_were_lost_and_fails_one_nothing_can_move() {
    use shared::engine::sweep::redrive_stalled;
    let peer = Peer::start().await;
    let app = App::start("stalled", &[]).await;
    let tenant = "t-stalled";
    let c = Client::new(&app, tenant).await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "lost", "start": "call", "steps": {
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/lost", peer.base)}}}))
        .await;
    // Stored before validation knew better: its start step does not exist.
    let def: shared::domain::definition::Definition = serde_json::from_value(
        json!({"name": "stuck", "start": "ghost", "steps": {"real": {"type": "succeed"}}}),
    )
    .unwrap();
    f.services
        .workflows
        .create(tenant, "test", "stuck", def)
        .await
        .unwrap();
    let lost = c.start(&wf, json!({})).await;
    let stuck = c.start("stuck", json!({})).await;
    // Their first records never reach the orchestrator (lost, or given up on by the mapping).
    let _dropped = f.poll().await;
    assert_eq!(status(&c, &lost).await, "running");

    let orchestrator = f.services.orchestrator();
    let (repo, projections) = (f.services.repo.clone(), f.services.projections.clone());
    let sweep = async || {
        redrive_stalled(
            &orchestrator,
            &repo,
            &projections,
            chrono::Utc::now() + chrono::Duration::seconds(2),
            chrono::Duration::zero(),
            std::time::Instant::now() + Duration::from_secs(20),
        )
        .await
    };
    let stalls = sweep().await.unwrap();
    assert_eq!(stalls.redriven, 1, "{stalls:?}");
    assert_eq!(stalls.failed, 1, "{stalls:?}");
    let e = c.execution(&stuck).await;
    assert_eq!(e["status"], "failed");
    assert_eq!(e["error"]["kind"], "Stalled", "{e:#}");
    // The moved one goes on as usual.
    f.pump(async || status(&c, &lost).await == "succeeded")
        .await;
    assert_eq!(peer.calls("lost"), 1);
    // Nothing left for the sweep.
    let again = sweep().await.unwrap();
    assert_eq!((again.redriven, again.failed), (0, 0), "{again:?}");
}

#[tokio::test]
async fn a_task_no_worker_ever_took_up_fails_as_lost_and_is_retried() {
    use shared::engine::sweep::redrive_stalled;
    let peer = Peer::start().await;
    let app = App::start("task-lost", &[]).await;
    let c = Client::new(&app, "t-task-lost").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "lost-task", "start": "call", "steps": {
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/lost-task", peer.base),
                     "retry": {"max_attempts": 2, "initial_interval_ms": 100}, "next": "ask"},
            // Keeps the execution running, so only the attempt's state tells the lost one apart.
            "ask": {"type": "approval"}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    // The task's record never reaches a worker (the mapping gave it up).
    let dropped = f.poll().await;

    // The sweep, as it would run 14 hours later: past every mapping's maximum record age.
    let orchestrator = f.services.orchestrator();
    let later = chrono::Utc::now() + chrono::Duration::hours(14);
    let stalls = redrive_stalled(
        &orchestrator,
        &f.services.repo,
        &f.services.projections,
        later,
        chrono::Duration::zero(),
        std::time::Instant::now() + Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(stalls.redriven, 1, "{stalls:?}");
    let history = c.history(&id).await;
    let lost = history
        .iter()
        .find(|e| e["type"] == "StepFailed")
        .expect("the lost attempt is failed");
    assert_eq!(lost["payload"]["error"]["kind"], "TaskLost", "{lost:#}");
    // Its retry runs as usual.
    f.pump(async || {
        !c.execution(&id).await["awaiting_approval"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert_eq!(peer.calls("lost-task"), 1);
    // The lost record replayed from the failure queue afterwards: that attempt was given up, so
    // its call is not made.
    let lost_tasks = f.tasks(&dropped);
    assert_eq!(lost_tasks.len(), 1);
    let r = f
        .worker
        .handle(Functions::event(&lost_tasks), WORKER_TIMEOUT)
        .await;
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(
        peer.calls("lost-task"),
        1,
        "the lost attempt is not performed"
    );
}

#[tokio::test]
async fn the_task_of_a_losing_join_any_branch_still_in_flight_is_not_performed() {
    let peer = Peer::start().await;
    let app = App::start("race-loser", &[]).await;
    let c = Client::new(&app, "t-race-loser").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "race", "start": "race", "steps": {
            "race": {"type": "parallel", "join": "any", "branches": [{"start": "fast"}, {"start": "slow"}], "next": "ask"},
            "ask": {"type": "approval"},
            "fast": {"type": "http", "method": "POST", "url": format!("{}/echo/race-fast", peer.base)},
            "slow": {"type": "http", "method": "POST", "url": format!("{}/echo/race-slow", peer.base)}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let records = f.poll().await;
    f.orchestrator.handle(Functions::event(&records)).await;
    let scheduled = f.poll().await;
    f.orchestrator.handle(Functions::event(&scheduled)).await;
    let tasks = f.tasks(&scheduled);
    assert_eq!(tasks.len(), 2, "both branches scheduled");
    let (fast, slow): (Vec<Value>, Vec<Value>) = tasks
        .into_iter()
        .partition(|t| t.to_string().contains("race-fast"));
    assert_eq!((fast.len(), slow.len()), (1, 1));
    // The fast branch wins while the slow one's record is still on its way to a worker.
    f.worker
        .handle(Functions::event(&fast), WORKER_TIMEOUT)
        .await;
    f.pump(async || {
        !c.execution(&id).await["awaiting_approval"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let r = f
        .worker
        .handle(Functions::event(&slow), WORKER_TIMEOUT)
        .await;
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(peer.calls("race-fast"), 1);
    assert_eq!(peer.calls("race-slow"), 0, "the loser's call is not made");
    let e = c.execution(&id).await;
    let slow_step = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "slow")
        .cloned()
        .unwrap();
    assert_eq!(slow_step["status"], "abandoned", "{e:#}");
}

#[tokio::test]
async fn a_timer_that_fails_every_time_does_not_hold_up_the_timers_behind_it() {
    use crate::support::ForcedConflicts;
    use shared::executions::projection::TimerRow;
    let app = App::start("timer-poison", &[]).await;
    let tenant = "t-timer-poison";
    let c = Client::new(&app, tenant).await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "nap", "start": "nap", "steps": {
            "nap": {"type": "wait", "seconds": 1}}}))
        .await;
    let shard = |id: &str| {
        let stream = shared::executions::repo::stream_id(tenant, id).unwrap();
        TimerRow::new(stream.as_str(), "t", chrono::Utc::now()).pk
    };
    // The poisoned timer, then one due after it in the same partition, and a few elsewhere.
    let poisoned = c.start(&wf, json!({})).await;
    let mut others = Vec::new();
    while !others.iter().any(|o: &String| shard(o) == shard(&poisoned)) {
        assert!(
            others.len() < 64,
            "no execution landed in the poisoned timer's partition"
        );
        others.push(c.start(&wf, json!({})).await);
    }
    f.pump(async || {
        let e = c.execution(&poisoned).await;
        e["current_steps"] == json!(["nap"])
    })
    .await;
    // Every append to the poisoned execution now conflicts, so firing its timer fails each time.
    let rule = ForcedConflicts::add(json!({"key_contains": poisoned})).await;
    f.pump(async || {
        for o in &others {
            if status(&c, o).await != "succeeded" {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(status(&c, &poisoned).await, "running");
    let (rows, _) = f
        .services
        .projections
        .due_timers(
            shard(&poisoned)
                .trim_start_matches("TIMERS#")
                .parse()
                .unwrap(),
            chrono::Utc::now() + chrono::Duration::hours(2),
            100,
            None,
        )
        .await
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r.stream_id.contains(&poisoned))
        .expect("the poisoned timer is still queued");
    assert_eq!(row.failures, 0, "lost races are not failures: {row:?}");
    let queued_at = row.sk.split('#').next().unwrap();
    assert!(
        queued_at
            > row
                .due_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str(),
        "and it is moved back in the queue: {row:?}"
    );
    let counters = rule.remove().await;
    assert!(counters["forced"].as_u64().unwrap() >= 1, "{counters}");
    // Once the fault is gone it fires (at its postponed time, here brought forward).
    shared::engine::timers::fire_due(
        &f.services.repo,
        &f.services.projections,
        chrono::Utc::now() + chrono::Duration::hours(2),
        std::time::Instant::now() + Duration::from_secs(20),
    )
    .await
    .unwrap();
    f.pump(async || status(&c, &poisoned).await == "succeeded")
        .await;
}

#[tokio::test]
async fn an_invocation_that_outlives_its_timeout_is_cut_off_and_its_batch_retried() {
    use crate::support::ForcedConflicts;
    use std::sync::{Arc, Mutex};
    let peer = Peer::start().await;
    let app = App::start("cut-off", &[]).await;
    let tenant = format!("t-cut-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let c = Client::new(&app, &tenant).await;
    let mut template = app.template.clone();
    template.set_property("OrchestratorFunction", "Timeout", json!(2));
    let env: BTreeMap<String, String> = [
        ("HTTP_ALLOW_PRIVATE_NETWORKS", "true"),
        ("RATE_LIMIT_REQUESTS", "100000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // What each orchestrator invocation returned, as the mapping saw it.
    let results: Arc<Mutex<Vec<Result<usize, String>>>> = Arc::default();
    let seen = results.clone();
    let _streams =
        wfe_local::runner::spawn_streams_with(&template, &app.sdk, &env, move |function, h| {
            if function != "OrchestratorFunction" {
                return h;
            }
            let seen = seen.clone();
            Arc::new(move |event| {
                let (h, seen) = (h.clone(), seen.clone());
                Box::pin(async move {
                    let r = h(event).await;
                    let summary = r
                        .as_ref()
                        .map(|r| r.batch_item_failures.len())
                        .map_err(String::clone);
                    seen.lock().unwrap().push(summary);
                    r
                })
            })
        })
        .await
        .unwrap();
    let wf = c
        .create(json!({"name": "cut", "start": "call", "steps": {
            "call": {"type": "http", "method": "POST", "url": format!("{}/echo/{tenant}", peer.base)}}}))
        .await;
    // Every write to this tenant's executions stalls in DynamoDB for longer than the
    // orchestrator may run (a throttled or slow call): Lambda kills the invocation at its
    // timeout, whatever the handler was doing.
    let hold = ForcedConflicts::add(
        json!({"key_contains": format!("{tenant}#execution#"), "probability": 0.0, "hold_ms": 3000, "single_writes": true}),
    )
    .await;
    let id = c.start(&wf, json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !results.lock().unwrap().iter().any(Result::is_err) {
        assert!(
            Instant::now() < deadline,
            "no invocation was cut off: {:?}",
            results.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counters = hold.remove().await;
    assert!(counters["held"].as_u64().unwrap() >= 2, "{counters}");
    let cut = results
        .lock()
        .unwrap()
        .iter()
        .find_map(|r| r.clone().err())
        .unwrap();
    assert_eq!(cut, "Task timed out after 2 seconds");
    // The mapping retries the batch; the step runs once and the execution ends.
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(peer.calls(&tenant), 1);
}

#[tokio::test]
async fn the_sweep_never_fails_an_execution_whose_turn_only_lost_its_races() {
    use crate::support::ForcedConflicts;
    use shared::engine::sweep::redrive_stalled;
    let peer = Peer::start().await;
    let app = App::start("sweep-races", &[]).await;
    let c = Client::new(&app, "t-sweep-races").await;
    let mut f = Functions::new(&app).await;
    let wf = c
        .create(json!({"name": "gate", "start": "ask", "steps": {
            "ask": {"type": "approval", "next": "after"},
            "after": {"type": "http", "method": "POST", "url": format!("{}/echo/sweep-races", peer.base)}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    f.pump(async || c.execution(&id).await["awaiting_approval"] == json!(["ask"]))
        .await;
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{id}/approvals/ask"),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(r.status(), 202);
    // The decision's record never reaches the orchestrator: nothing is pending any more, and
    // the next step is not scheduled yet.
    let _dropped = f.poll().await;
    // Every append the sweep's turn tries loses its race (8 tries of 3 writes each).
    let races = ForcedConflicts::add(json!({
        "key_contains": id,
        "table": app.template.tables().unwrap().events,
        "count": 24,
        "single_writes": true,
    }))
    .await;
    let orchestrator = f.services.orchestrator();
    let (repo, projections) = (f.services.repo.clone(), f.services.projections.clone());
    let sweep = async || {
        redrive_stalled(
            &orchestrator,
            &repo,
            &projections,
            chrono::Utc::now() + chrono::Duration::seconds(2),
            chrono::Duration::zero(),
            std::time::Instant::now() + Duration::from_secs(20),
        )
        .await
        .unwrap()
    };
    let first = sweep().await;
    let counters = races.remove().await;
    assert_eq!(counters["forced"], 24, "{counters}");
    assert_eq!(first.failed, 0, "{first:?}");
    assert_eq!(status(&c, &id).await, "running");
    // The next look moves it on.
    let second = sweep().await;
    assert_eq!(second.redriven, 1, "{second:?}");
    f.pump(async || status(&c, &id).await == "succeeded").await;
    assert_eq!(peer.calls("sweep-races"), 1);
}

/// Issue 14: a worker decides from its own last write without reading the history; when another
/// writer appended since, its exact-version append is refused, and it reads once and decides
/// again, so the outcome still carries the next task (and nothing runs twice).
#[tokio::test]
async fn a_worker_behind_the_stream_reads_once_and_still_decides() {
    use shared::domain::execution::ExecutionEvent as E;
    let app = App::start("behind", &[]).await;
    let peer = Peer::start().await;
    let tenant = "t-behind";
    let c = Client::new(&app, tenant).await;
    let mut f = Functions::new(&app).await;
    let call = |next: Option<&str>| {
        let mut s = json!({"type": "http", "method": "POST", "url": format!("{}/echo/behind", peer.base), "body": {}});
        if let Some(n) = next {
            s["next"] = json!(n);
        }
        s
    };
    let wf = c
        .create(json!({"name": "behind", "start": "a", "steps": {
            "a": call(Some("b")), "b": call(Some("c")), "c": call(None)}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let started = f.poll().await;
    f.orchestrator.handle(Functions::event(&started)).await;
    let records = f.poll().await;
    let scheduled = f.tasks(&records);
    assert_eq!(scheduled.len(), 1);
    // `a`: its outcome carries `b`'s task, and the worker keeps the state it wrote.
    f.worker
        .handle(Functions::event(&scheduled), WORKER_TIMEOUT)
        .await;
    let records = f.poll().await;
    let carried = f.tasks(&records);
    assert_eq!(carried.len(), 1, "b's task rides in a's outcome");
    // Another writer appends before `b`'s outcome (an event that changes nothing here).
    let stream = shared::executions::repo::stream_id(tenant, &id).unwrap();
    let cause = shared::executions::Cause {
        tenant,
        actor: "test",
        correlation_id: &id,
        causation_id: None,
        at: chrono::Utc::now(),
    };
    let other = f
        .services
        .repo
        .append_any(
            &stream,
            vec![E::TimerFired {
                timer_id: "not-a-timer-of-this-execution".into(),
            }],
            &cause,
            None,
        )
        .await
        .unwrap();
    f.worker
        .handle(Functions::event(&carried), WORKER_TIMEOUT)
        .await;
    f.pump(async || status(&c, &id).await == "succeeded").await;
    assert_eq!(peer.calls("behind"), 3, "each step called once");
    let stored = f.services.repo.store().read_from(&stream, 1).await.unwrap();
    let b = stored
        .iter()
        .find(|e| e.event_type == "StepSucceeded" && e.payload["key"] == "b")
        .unwrap_or_else(|| panic!("{stored:#?}"));
    assert_eq!(
        b.payload.get("tasks"),
        Some(&json!(1)),
        "b's outcome still carries c: {b:#?}"
    );
    assert_eq!(b.version, other.last_version + 1);
}
