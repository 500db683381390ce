//! Workflows and durable executions end to end: the HTTP APIs, the orchestrator and worker on
//! moto's stream, and the timer, all through the local runner; `http` steps call a local server
//! that counts what it receives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{json, Value};

use crate::support::{problem, App};

/// A local HTTP peer for `http` steps: counts calls per name and tracks concurrency.
#[derive(Clone, Default)]
pub struct Peer {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    /// Names that answer 503 until switched off.
    failing: Arc<Mutex<HashMap<String, bool>>>,
    pub base: String,
}

impl Peer {
    pub async fn start() -> Self {
        let mut peer = Peer::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peer.base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/echo/{name}", post(echo))
            .route("/flaky/{name}/{failures}", get(flaky))
            .route("/switch/{name}", get(switch))
            .route("/hold/{name}/{holds}", get(hold))
            .route("/whole-float", get(whole_float))
            .with_state(peer.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        peer
    }

    fn count(&self, name: &str) -> usize {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(name.to_owned()).or_default();
        *n += 1;
        *n
    }

    pub fn calls(&self, name: &str) -> usize {
        self.calls.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    pub fn set_failing(&self, name: &str, failing: bool) {
        self.failing
            .lock()
            .unwrap()
            .insert(name.to_owned(), failing);
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn echo(
    State(p): State<Peer>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> axum::Json<Value> {
    p.count(&name);
    let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    p.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Long enough that concurrent calls overlap.
    tokio::time::sleep(Duration::from_millis(30)).await;
    p.in_flight.fetch_sub(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    axum::Json(json!({"name": name, "got": body}))
}

async fn flaky(
    State(p): State<Peer>,
    Path((name, failures)): Path<(String, usize)>,
) -> (StatusCode, String) {
    let n = p.count(&name);
    if n <= failures {
        (StatusCode::SERVICE_UNAVAILABLE, format!("failure {n}"))
    } else {
        (StatusCode::OK, format!("ok after {n}"))
    }
}

/// A JSON number written as a float with no fraction (`1.0`), which DynamoDB stores as `1`.
async fn whole_float() -> axum::response::Response {
    axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"x": 1.0}"#,
    ))
}

/// The first `holds` calls never answer (a worker dies while waiting on them).
async fn hold(State(p): State<Peer>, Path((name, holds)): Path<(String, usize)>) -> String {
    let n = p.count(&name);
    if n <= holds {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    format!("answered call {n}")
}

async fn switch(State(p): State<Peer>, Path(name): Path<String>) -> (StatusCode, String) {
    p.count(&name);
    if p.failing
        .lock()
        .unwrap()
        .get(&name)
        .copied()
        .unwrap_or(false)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "switched off".into())
    } else {
        (StatusCode::OK, "on".into())
    }
}

/// A signed-in user of one tenant.
pub struct Client<'a> {
    pub app: &'a App,
    pub token: String,
}

impl<'a> Client<'a> {
    /// A member who authors, runs and approves (roles `user` and `approver`).
    pub async fn new(app: &'a App, tenant: &str) -> Client<'a> {
        let (name, password) = app.user(tenant, &["user", "approver"]).await;
        let (token, _) = app.tokens(&name, &password).await;
        Client { app, token }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .app
            .http
            .request(method, self.app.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    pub async fn create(&self, def: Value) -> String {
        let r = self
            .send(reqwest::Method::POST, "/workflows", Some(def))
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["workflow"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn start(&self, workflow: &str, input: Value) -> String {
        let r = self
            .send(
                reqwest::Method::POST,
                &format!("/workflows/{workflow}/executions"),
                Some(json!({"input": input})),
            )
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["execution_id"].as_str().unwrap().to_owned()
    }

    /// GET `path` as JSON (status not checked: the caller asserts on the body).
    pub async fn get_json(&self, path: &str) -> Value {
        self.send(reqwest::Method::GET, path, None)
            .await
            .json()
            .await
            .unwrap()
    }

    /// Sends and expects a problem+json answer with `status`.
    pub async fn refused(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        problem(self.send(method, path, body).await, status).await
    }

    pub async fn execution(&self, id: &str) -> Value {
        let r = self
            .send(reqwest::Method::GET, &format!("/executions/{id}"), None)
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls until `pred` holds (deadline 90 s: moto is slow, a map of 100 items takes a while).
    pub async fn until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let e = self.execution(id).await;
            if pred(&e) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} never got {what}: {e:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn finished(&self, id: &str) -> Value {
        self.until(id, "a final status", |e| e["status"] != "running")
            .await
    }

    pub async fn history(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let r = self
                .send(
                    reqwest::Method::GET,
                    &format!("/executions/{id}/events?from={from}&limit=500"),
                    None,
                )
                .await;
            let page: Value = r.json().await.unwrap();
            out.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["next"].as_u64() {
                Some(n) => from = n,
                None => return out,
            }
        }
    }

    pub async fn types(&self, id: &str) -> Vec<String> {
        self.history(id)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn count(types: &[String], t: &str) -> usize {
    types.iter().filter(|x| *x == t).count()
}

#[tokio::test]
async fn linear_workflow_completes_with_its_outputs() {
    let app = App::start_engine("wf-linear", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-linear").await;
    let wf = c
        .create(json!({"name": "linear", "start": "greet",
            "input_schema": {"type": "object", "required": ["topic"], "properties": {"topic": {"type": "string"}}},
            "steps": {
                "greet": {"type": "template", "template": "Hello {{ input.topic | upper }}", "next": "call"},
                "call": {"type": "http", "method": "POST", "url": format!("{}/echo/linear", peer.base), "body": {"text": "{{ steps.greet.output }}"}, "next": "shape"},
                "shape": {"type": "transform", "mapping": {"echoed": "steps.call.output.body.got.text", "status": "steps.call.output.status"}}
            },
            "outputs": {"result": "{{ steps.shape.output }}", "topic": "{{ input.topic }}"}}))
        .await;
    let id = c.start(&wf, json!({"topic": "rust"})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(
        e["output"],
        json!({"result": {"echoed": "Hello RUST", "status": 200}, "topic": "rust"})
    );
    assert_eq!(peer.calls("linear"), 1);
    assert!(e["duration_ms"].as_i64().is_some());
    // The listing projection catches up with the same summary (it is written after the final
    // event, which the execution's own view reads).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = c
            .send(
                reqwest::Method::GET,
                &format!("/executions?workflow_id={wf}&status=succeeded"),
                None,
            )
            .await;
        let page: Value = r.json().await.unwrap();
        if page["items"][0]["execution_id"] == id.as_str() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page:#}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let w: Value = c.get_json(&format!("/workflows/{wf}")).await;
    assert_eq!(w["stats"]["runs"], 1, "{w:#}");
    assert_eq!(w["stats"]["success_rate"], 1.0);
}

/// Issue 14: a turn rewrites the stored summary only when what it shows apart from progress
/// changes; listings still show a running execution's progress as of now (read from its events),
/// and its end writes the final summary.
#[tokio::test]
async fn summaries_are_rewritten_on_change_and_listings_show_live_progress() {
    let app = App::start_engine("wf-summary-writes", &[]).await;
    let peer = Peer::start().await;
    let tenant = "t-summary-writes";
    let c = Client::new(&app, tenant).await;
    let call = |next: &str| json!({"type": "http", "method": "POST", "url": format!("{}/echo/quick", peer.base), "body": {}, "next": next});
    let wf = c
        .create(json!({"name": "quick then nap", "start": "a", "steps": {
            "a": call("b"), "b": call("c"), "c": call("nap"),
            "nap": {"type": "wait", "seconds": 3600}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    c.until(&id, "the wait", |e| e["current_steps"] == json!(["nap"]))
        .await;
    let projections = shared::executions::Projections::new(
        aws_sdk_dynamodb::Client::new(&app.sdk),
        app.template.tables().unwrap().state,
    );
    let stored = projections.summary(tenant, &id).await.unwrap().unwrap();
    // Written when the run started; the three steps after it changed only its progress.
    assert_eq!(stored.status, "running");
    assert_eq!(stored.steps_completed, 0, "{stored:?}");
    let listed = c.get_json(&format!("/executions?workflow_id={wf}")).await;
    assert_eq!(
        listed["items"][0]["execution_id"],
        id.as_str(),
        "{listed:#}"
    );
    assert_eq!(listed["items"][0]["steps_completed"], 3, "{listed:#}");
    assert_eq!(
        listed["items"][0]["current_steps"],
        json!(["nap"]),
        "{listed:#}"
    );
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{id}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let s = projections.summary(tenant, &id).await.unwrap().unwrap();
        if s.status == "cancelled" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the end was never projected: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored.steps_completed, 3, "{stored:?}");
    let view = c.execution(&id).await;
    assert_eq!(view["version"], stored.version, "{view:#}");
    assert_eq!(
        view["current_steps"],
        json!(stored.current_steps),
        "{view:#}"
    );
}

/// Issue 14: after an http step, the worker appends the outcome with the next task inside it (one
/// write) and the next worker performs it; a wait (a timer) and the end stay the orchestrator's.
/// The history shows every event as before.
#[tokio::test]
async fn the_worker_schedules_plain_successors_inside_its_outcome() {
    let app = App::start_engine("wf-worker-decides", &[]).await;
    let peer = Peer::start().await;
    let tenant = "t-worker-decides";
    let c = Client::new(&app, tenant).await;
    let call = |next: Option<&str>| {
        let mut step = json!({"type": "http", "method": "POST", "url": format!("{}/echo/chain", peer.base), "body": {"n": "{{ input.n }}"}});
        if let Some(next) = next {
            step["next"] = json!(next);
        }
        step
    };
    let wf = c
        .create(json!({"name": "chain", "start": "a", "steps": {
            "a": call(Some("t")),
            "t": {"type": "template", "template": "after {{ steps.a.output.status }}", "next": "b"},
            "b": call(Some("nap")),
            "nap": {"type": "wait", "seconds": 1, "next": "c"},
            "c": call(None)}}))
        .await;
    let id = c.start(&wf, json!({"n": 7})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(peer.calls("chain"), 3);

    let stream = shared::executions::repo::stream_id(tenant, &id).unwrap();
    let stored = app.events(&stream).await;
    let carrying: Vec<_> = stored
        .iter()
        .filter(|e| e.payload.contains_key("tasks"))
        .collect();
    // `a` carried the template and `b`'s task; `b` (a wait next) and `c` (the end) did not.
    assert_eq!(carrying.len(), 1, "{stored:#?}");
    assert_eq!(carrying[0].event_type, "StepSucceeded");
    assert_eq!(carrying[0].payload["tasks"], 1);
    assert_eq!(carrying[0].metadata.actor.as_deref(), Some("worker"));
    // The history shows it as the outcome, the template's and the next task.
    let types = c.types(&id).await;
    assert_eq!(count(&types, "StepScheduled"), 3, "{types:?}");
    assert_eq!(count(&types, "StepSucceeded"), 4, "{types:?}");
    let history = c.history(&id).await;
    let at = history
        .iter()
        .position(|e| e["version"] == carrying[0].version)
        .unwrap_or_else(|| panic!("{history:#?}"));
    let shown: Vec<&str> = history[at..at + 3]
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(shown, ["StepSucceeded", "StepSucceeded", "StepScheduled"]);
    assert!(history[at..at + 3]
        .iter()
        .all(|e| e["version"] == history[at]["version"]));
    assert!(
        history[at]["payload"].get("then").is_none(),
        "{:#}",
        history[at]
    );
    assert_eq!(stored.len(), history.len() - 2);
}

/// A worker decides from its outcome as the store keeps it: a float with no fraction in an
/// answer renders in the next request as a replay of the history renders it (`1`, not `1.0`).
#[tokio::test]
async fn a_worker_decides_from_numbers_as_the_store_keeps_them() {
    let app = App::start_engine("wf-whole-float", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-whole-float").await;
    let wf = c
        .create(json!({"name": "float", "start": "a", "steps": {
            "a": {"type": "http", "method": "GET", "url": format!("{}/whole-float", peer.base), "next": "b"},
            "b": {"type": "http", "method": "POST", "url": format!("{}/echo/float", peer.base),
                  "body": {"x": "x={{ steps.a.output.body.x }}"}}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let history = c.history(&id).await;
    let request = history
        .iter()
        .find(|e| e["type"] == "StepScheduled" && e["payload"]["key"] == "b")
        .unwrap_or_else(|| panic!("{history:#?}"));
    assert_eq!(
        request["payload"]["request"]["body"]["x"], "x=1",
        "{request:#}"
    );
}

/// Without migration 0011's marker (before the migrator ran, or after its down), outcomes go
/// alone and the orchestrator schedules every step, as the previous release expects.
#[tokio::test]
async fn without_the_marker_workers_leave_decisions_to_the_orchestrator() {
    let app = App::start_engine("wf-no-marker", &[]).await;
    let tables = app.template.tables().unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&app.sdk);
    dynamodb
        .delete_item()
        .table_name(&tables.state)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("SCHEMA".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("WORKER_DECIDES".into()),
        )
        .send()
        .await
        .unwrap();
    let peer = Peer::start().await;
    let tenant = "t-no-marker";
    let c = Client::new(&app, tenant).await;
    let call = |next: &str| json!({"type": "http", "method": "POST", "url": format!("{}/echo/alone", peer.base), "body": {}, "next": next});
    let wf = c
        .create(json!({"name": "alone", "start": "a", "steps": {
            "a": call("b"), "b": call("c"),
            "c": {"type": "http", "method": "POST", "url": format!("{}/echo/alone", peer.base), "body": {}}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert_eq!(peer.calls("alone"), 3);
    let stream = shared::executions::repo::stream_id(tenant, &id).unwrap();
    let stored = app.events(&stream).await;
    assert!(
        stored.iter().all(|e| !e.payload.contains_key("tasks")),
        "{stored:#?}"
    );
    let scheduled = stored
        .iter()
        .filter(|e| e.event_type == "StepScheduled")
        .count();
    assert_eq!(scheduled, 3, "{stored:#?}");
}

#[tokio::test]
async fn parallel_branches_join_and_conditions_route_both_ways() {
    let app = App::start_engine("wf-branch", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-branch").await;
    let wf = c
        .create(json!({"name": "branches", "start": "route", "steps": {
            "route": {"type": "condition", "branches": [{"when": "input.score >= 0.5", "next": "both"}], "default": "low"},
            "both": {"type": "parallel", "branches": [{"start": "a"}, {"start": "b1"}], "next": "joined"},
            "a": {"type": "http", "method": "POST", "url": format!("{}/echo/a", peer.base), "body": {"v": "A"}},
            "b1": {"type": "template", "template": "B", "next": "b2"},
            "b2": {"type": "http", "method": "POST", "url": format!("{}/echo/b", peer.base), "body": {"v": "{{ steps.b1.output }}2"}},
            "joined": {"type": "transform", "mapping": ["steps.both.output[0].body.got.v", "steps.both.output[1].body.got.v"]},
            "low": {"type": "succeed", "output": "low road"}}}))
        .await;
    let high = c.start(&wf, json!({"score": 0.9})).await;
    let low = c.start(&wf, json!({"score": 0.1})).await;
    let high = c.finished(&high).await;
    let low = c.finished(&low).await;
    assert_eq!(high["output"], json!(["A", "B2"]), "{high:#}");
    assert_eq!(low["output"], "low road", "{low:#}");
    assert_eq!((peer.calls("a"), peer.calls("b")), (1, 1));
}

#[tokio::test]
async fn map_over_100_items_with_concurrency_10_keeps_order() {
    let app = App::start_engine("wf-map", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-map").await;
    let wf = c
        .create(json!({"name": "map", "start": "each", "steps": {
            "each": {"type": "map", "items": "input.items", "concurrency": 10, "iterator": {"start": "double"}},
            "double": {"type": "http", "method": "POST", "url": format!("{}/echo/item", peer.base), "body": {"n": "{{ item * 2 }}", "i": "{{ index }}"}}}}))
        .await;
    let items: Vec<u32> = (0..100).collect();
    let id = c.start(&wf, json!({"items": items})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let got: Vec<i64> = e["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["body"]["got"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(got, (0..100).map(|i| i * 2).collect::<Vec<i64>>());
    assert_eq!(peer.calls("item"), 100);
    // A long history is snapshotted as it grows, so a cold replay starts near its end.
    let services = shared::engine::Services::new(
        &wfe_local::runner::function_config(
            &app.template,
            "OrchestratorFunction",
            &Default::default(),
        )
        .unwrap(),
        &app.sdk,
    )
    .unwrap();
    let stream = shared::executions::stream_id("t-map", &id).unwrap();
    let snapshot =
        shared::events::EventStore::load_snapshot(services.repo.store().as_ref(), &stream)
            .await
            .unwrap()
            .expect("a snapshot of the long history");
    let history_len = c.history(&id).await.len() as u64;
    assert!(
        snapshot.version >= history_len - 2 * shared::executions::repo::SNAPSHOT_EVERY,
        "snapshot at {} of {history_len}",
        snapshot.version
    );
    assert!(
        peer.max_in_flight() <= 10,
        "{} calls at once",
        peer.max_in_flight()
    );
}

fn retrying(peer: &Peer, name: &str, failures: u32, catch: bool) -> Value {
    let mut call = json!({"type": "http", "url": format!("{}/flaky/{name}/{failures}", peer.base),
        "retry": {"max_attempts": 3, "initial_interval_ms": 300, "backoff_rate": 2.0, "errors": ["HttpError"]}, "next": "done"});
    let mut def = json!({"name": "retry", "start": "call", "steps": {
        "done": {"type": "succeed", "output": "{{ steps.call.output.body }}"}}});
    if catch {
        call["catch"] = json!([{"errors": ["HttpError"], "next": "fallback"}]);
        def["steps"]["fallback"] =
            json!({"type": "succeed", "output": "fallback: {{ error.kind }}"});
    }
    def["steps"]["call"] = call;
    def
}

#[tokio::test]
async fn retry_with_backoff_then_success_and_exhausted_then_catch() {
    let app = App::start_engine("wf-retry", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-retry").await;
    let ok = c.create(retrying(&peer, "twice", 2, false)).await;
    let caught = c.create(retrying(&peer, "always", 99, true)).await;
    let failing = c.create(retrying(&peer, "never", 99, false)).await;
    let (a, b, d) = (
        c.start(&ok, json!({})).await,
        c.start(&caught, json!({})).await,
        c.start(&failing, json!({})).await,
    );

    let e = c.finished(&a).await;
    assert_eq!(e["output"], "ok after 3", "{e:#}");
    assert_eq!(peer.calls("twice"), 3);
    let types = c.types(&a).await;
    assert_eq!(count(&types, "StepRetryScheduled"), 2, "{types:?}");
    // The back-off is recorded: 300 ms, then 600 ms after the turn that saw each failure.
    let history = c.history(&a).await;
    let delays: Vec<i64> = history
        .iter()
        .filter(|e| e["type"] == "StepRetryScheduled")
        .map(|r| {
            let due =
                chrono::DateTime::parse_from_rfc3339(r["payload"]["due_at"].as_str().unwrap())
                    .unwrap();
            let at = chrono::DateTime::parse_from_rfc3339(r["at"].as_str().unwrap()).unwrap();
            (due - at).num_milliseconds()
        })
        .collect();
    assert_eq!(delays, [300, 600]);

    let e = c.finished(&b).await;
    assert_eq!(e["output"], "fallback: HttpError", "{e:#}");
    assert_eq!(peer.calls("always"), 3, "three attempts, then the catch");

    let e = c.finished(&d).await;
    assert_eq!(e["status"], "failed");
    assert_eq!(e["error"]["kind"], "HttpError");
    assert_eq!(e["failed_step"], "call");
}

#[tokio::test]
async fn wait_resumes_through_the_timer_and_approvals_pause() {
    let app = App::start_engine("wf-wait", &[]).await;
    let c = Client::new(&app, "t-wait").await;
    let wait = c
        .create(json!({"name": "wait", "start": "nap", "steps": {
            "nap": {"type": "wait", "seconds": 1, "next": "end"},
            "end": {"type": "succeed", "output": "{{ steps.nap.output.waited_until }}"}}}))
        .await;
    let approval = c
        .create(json!({"name": "approve", "start": "ask", "steps": {
            "ask": {"type": "approval", "prompt": "ship {{ input.what }}?", "timeout_seconds": 3600, "next": "end"},
            "end": {"type": "succeed", "output": "approved by {{ steps.ask.output.by }}"}}}))
        .await;
    let started = Instant::now();
    let w = c.start(&wait, json!({})).await;
    let yes = c.start(&approval, json!({"what": "v2"})).await;
    let no = c.start(&approval, json!({"what": "v3"})).await;

    let e = c.finished(&w).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let types = c.types(&w).await;
    assert!(types.contains(&"TimerFired".to_owned()), "{types:?}");

    for id in [&yes, &no] {
        c.until(id, "an approval request", |e| {
            e["awaiting_approval"] == json!(["ask"])
        })
        .await;
    }
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{yes}/approvals/ask"),
            Some(json!({"decision": "approve", "comment": "lgtm"})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{no}/approvals/ask"),
            Some(json!({"decision": "reject", "comment": "not yet"})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let e = c.finished(&yes).await;
    assert!(
        e["output"].as_str().unwrap().starts_with("approved by u"),
        "{e:#}"
    );
    let e = c.finished(&no).await;
    assert_eq!(e["status"], "failed");
    assert_eq!(e["error"]["kind"], "ApprovalRejected");
    assert!(e["error"]["message"].as_str().unwrap().contains("not yet"));
    // A decision on a step that is no longer waiting is refused and changes nothing.
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{yes}/approvals/ask"),
            Some(json!({"decision": "reject"})),
        )
        .await;
    problem(r, 409).await;
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{yes}/approvals/ask"),
            Some(json!({"decision": "maybe"})),
        )
        .await;
    problem(r, 400).await;
}

#[tokio::test]
async fn cancel_in_the_middle_and_redrive_from_the_failed_step() {
    let app = App::start_engine("wf-cancel", &[]).await;
    let peer = Peer::start().await;
    let c = Client::new(&app, "t-cancel").await;
    let wf = c
        .create(json!({"name": "two-calls", "start": "one", "steps": {
            "one": {"type": "http", "url": format!("{}/switch/one", peer.base), "next": "gate"},
            "gate": {"type": "approval", "next": "two"},
            "two": {"type": "http", "url": format!("{}/switch/two", peer.base), "next": "end"},
            "end": {"type": "succeed", "output": "{{ steps.one.output.body }} {{ steps.two.output.body }}"}}}))
        .await;
    // Cancel while it waits at the gate: nothing after it runs.
    let cancelled = c.start(&wf, json!({})).await;
    c.until(&cancelled, "the gate", |e| {
        e["awaiting_approval"] == json!(["gate"])
    })
    .await;
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{cancelled}/cancel"),
            Some(json!({"reason": "changed my mind"})),
        )
        .await;
    assert_eq!(r.status(), 202);
    let e = c.finished(&cancelled).await;
    assert_eq!(e["status"], "cancelled", "{e:#}");
    problem(
        c.send(
            reqwest::Method::POST,
            &format!("/executions/{cancelled}/approvals/gate"),
            Some(json!({"decision": "approve"})),
        )
        .await,
        409,
    )
    .await;
    problem(
        c.send(
            reqwest::Method::POST,
            &format!("/executions/{cancelled}/cancel"),
            None,
        )
        .await,
        409,
    )
    .await;
    assert_eq!(peer.calls("two"), 0);

    // Fail at `two`, then redrive: `one` does not run again.
    peer.set_failing("two", true);
    let id = c.start(&wf, json!({})).await;
    c.until(&id, "the gate", |e| {
        e["awaiting_approval"] == json!(["gate"])
    })
    .await;
    c.send(
        reqwest::Method::POST,
        &format!("/executions/{id}/approvals/gate"),
        Some(json!({"decision": "approve"})),
    )
    .await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(e["failed_step"], "two");
    problem(
        c.send(
            reqwest::Method::POST,
            &format!("/executions/{cancelled}/redrive"),
            None,
        )
        .await,
        409,
    )
    .await;
    peer.set_failing("two", false);
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{id}/redrive"),
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    let e = c
        .until(&id, "success after the redrive", |e| {
            e["status"] == "succeeded"
        })
        .await;
    assert_eq!(e["output"], "on on");
    assert_eq!(
        peer.calls("one"),
        2,
        "once per execution; the redrive did not repeat it"
    );
    assert_eq!(peer.calls("two"), 2, "the failed call and its redrive");
}

#[tokio::test]
async fn the_workflow_and_execution_apis_validate_version_and_isolate_tenants() {
    let app = App::start("wf-api", &[]).await;
    let c = Client::new(&app, "t-api").await;
    let other = Client::new(&app, "t-api-other").await;
    use reqwest::Method as M;

    // Every problem at once, with JSON pointers, as a 422 that creates nothing.
    let bad = json!({"name": "bad", "start": "a", "steps": {
        "a": {"type": "template", "template": "{{ steps.ghost.output }}", "next": "b"},
        "b": {"type": "http", "url": "{{ input.x", "next": "a"},
        "lost": {"type": "succeed"}}});
    let body = c
        .refused(M::POST, "/workflows", Some(bad.clone()), 422)
        .await;
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for p in ["/steps/a/template", "/steps/b/url", "/steps/lost"] {
        assert!(pointers.contains(&p), "{p} in {body:#}");
    }
    assert!(body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"].as_str().unwrap().starts_with("cycle")));
    c.refused(M::POST, "/workflows/validate", Some(bad), 422)
        .await;
    let listed: Value = c.get_json("/workflows").await;
    assert_eq!(listed["items"], json!([]), "nothing was created");
    let body = problem(
        c.send(
            M::POST,
            "/workflows",
            Some(json!({"name": "x", "start": "a", "steps": {"a": {"type": "teleport"}}})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["pointer"], "/steps/a");

    // YAML is accepted; versions are immutable and pinned by executions.
    let yaml = "id: greet\nname: greet\nstart: hi\ninput_schema:\n  type: object\n  required: [who]\n  properties:\n    who: {type: string}\nsteps:\n  hi:\n    type: succeed\n    output: \"hi {{ input.who }}\"\n";
    let r = app
        .http
        .post(app.url("/workflows"))
        .bearer_auth(&c.token)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v2 = json!({"name": "greet", "start": "hi", "steps": {"hi": {"type": "succeed", "output": "hello {{ input.who }}"}}});
    let r = app
        .http
        .put(app.url("/workflows/greet"))
        .bearer_auth(&c.token)
        .header("if-match", "1")
        .json(&v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .put(app.url("/workflows/greet"))
        .bearer_auth(&c.token)
        .header("if-match", "1")
        .json(&v2)
        .send()
        .await
        .unwrap();
    problem(r, 409).await;
    let v1: Value = c.get_json("/workflows/greet/versions/1").await;
    assert_eq!(
        v1["definition"]["steps"]["hi"]["output"],
        "hi {{ input.who }}"
    );
    c.refused(M::GET, "/workflows/greet/versions/9", None, 404)
        .await;

    // Input is checked against the pinned version's schema.
    let r = c
        .send(
            M::POST,
            "/workflows/greet/executions",
            Some(json!({"input": {"who": 5}, "version": 1})),
        )
        .await;
    let body = problem(r, 422).await;
    assert_eq!(body["errors"][0]["pointer"], "/input/who");

    // The same Idempotency-Key returns the same execution; reused for another request, a 422.
    let start = |key: &str, who: &str| {
        app.http
            .post(app.url("/workflows/greet/executions"))
            .bearer_auth(&c.token)
            .header("idempotency-key", key)
            .json(&json!({"input": {"who": who}, "version": 1}))
            .send()
    };
    let first = start("order-1", "ann").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = start("order-1", "ann").await.unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["execution_id"], again["execution_id"]);
    assert_eq!(again["replayed"], true);
    problem(start("order-1", "bob").await.unwrap(), 422).await;
    let id = first["execution_id"].as_str().unwrap();
    let e = c.execution(id).await;
    assert_eq!(e["workflow_version"], 1);
    assert_eq!(e["input"], json!({"who": "ann"}));
    let history: Value = c.get_json(&format!("/executions/{id}/events")).await;
    assert_eq!(
        history["events"].as_array().unwrap().len(),
        1,
        "exactly one ExecutionStarted"
    );

    // Another tenant sees none of it.
    for path in [
        "/workflows/greet".to_owned(),
        "/workflows/greet/versions/1".to_owned(),
        format!("/executions/{id}"),
        format!("/executions/{id}/events"),
    ] {
        other.refused(M::GET, &path, None, 404).await;
    }
    other
        .refused(M::POST, &format!("/executions/{id}/cancel"), None, 404)
        .await;
    other
        .refused(
            M::POST,
            "/workflows/greet/executions",
            Some(json!({"input": {"who": "x"}})),
            404,
        )
        .await;
    let theirs: Value = other.get_json("/workflows").await;
    assert_eq!(theirs["items"], json!([]));
    // A cursor from one tenant's listing is refused in another's.
    for i in 0..3 {
        c.create(
            json!({"name": format!("w{i}"), "start": "a", "steps": {"a": {"type": "succeed"}}}),
        )
        .await;
    }
    let page: Value = c.get_json("/workflows?limit=2").await;
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let next: Value = c
        .get_json(&format!("/workflows?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(
        page["items"].as_array().unwrap().len() + next["items"].as_array().unwrap().len(),
        4
    );
    other
        .refused(M::GET, &format!("/workflows?cursor={cursor}"), None, 400)
        .await;

    // Archived: readable, but starts nothing.
    assert_eq!(
        c.send(M::DELETE, "/workflows/greet", None).await.status(),
        200
    );
    problem(
        c.send(
            M::POST,
            "/workflows/greet/executions",
            Some(json!({"input": {"who": "x"}})),
        )
        .await,
        409,
    )
    .await;
    let archived: Value = c.get_json("/workflows?status=archived").await;
    assert_eq!(archived["items"][0]["id"], "greet");
    // Without a token, nothing.
    let r = app.http.get(app.url("/workflows")).send().await.unwrap();
    problem(r, 401).await;
}

#[tokio::test]
async fn a_subworkflow_runs_as_a_child_execution_and_its_failure_is_catchable() {
    let app = App::start_engine("wf-child", &[]).await;
    let c = Client::new(&app, "t-child").await;
    c.create(json!({"id": "child", "name": "child", "start": "shout",
        "input_schema": {"type": "object", "required": ["word"], "properties": {"word": {"type": "string"}}},
        "steps": {
            "shout": {"type": "condition", "branches": [{"when": "input.word == 'boom'", "next": "explode"}], "default": "upper"},
            "upper": {"type": "template", "template": "{{ input.word | upper }}!"},
            "explode": {"type": "fail", "error": "Boom", "cause": "asked to explode"}}}))
        .await;
    let parent = c
        .create(json!({"name": "parent", "start": "call", "steps": {
            "call": {"type": "subworkflow", "workflow_id": "child", "input": {"word": "{{ input.word }}"},
                     "catch": [{"errors": ["ChildBoom"], "next": "recover"}], "next": "done"},
            "done": {"type": "succeed", "output": "child said {{ steps.call.output }}"},
            "recover": {"type": "succeed", "output": "child failed with {{ error.kind }}"}}}))
        .await;
    let ok = c.start(&parent, json!({"word": "hi"})).await;
    let boom = c.start(&parent, json!({"word": "boom"})).await;
    let e = c.finished(&ok).await;
    assert_eq!(e["output"], "child said HI!", "{e:#}");
    let e = c.finished(&boom).await;
    assert_eq!(e["output"], "child failed with ChildBoom", "{e:#}");

    // A child whose output cannot be recorded (two 200 KB parts gathered into one) fails with a
    // clear error, and its parent's step fails with it instead of waiting forever.
    c.create(
        json!({"id": "big-child", "name": "big child", "start": "a", "steps": {
            "a": {"type": "template", "template": "{{ input.s }}{{ input.s }}", "next": "b"},
            "b": {"type": "template", "template": "{{ input.s }}{{ input.s }}"}},
        "outputs": {"a": "{{ steps.a.output }}", "b": "{{ steps.b.output }}"}}),
    )
    .await;
    let big_parent = c
        .create(json!({"name": "big parent", "start": "call", "steps": {
            "call": {"type": "subworkflow", "workflow_id": "big-child", "input": {"s": "{{ input.s }}"}}}}))
        .await;
    let big = c
        .start(&big_parent, json!({"s": "x".repeat(100 * 1024)}))
        .await;
    let e = c.finished(&big).await;
    assert_eq!(e["status"], "failed", "{e:#}");
    assert_eq!(e["error"]["kind"], "ChildOutputTooLarge", "{e:#}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("350 KB"),
        "the limit is named: {e:#}"
    );
    // The child is an execution of its own, listed under its workflow and linked to the parent.
    let children: Value = c.get_json("/executions?workflow_id=child").await;
    let items = children["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{children:#}");
    assert!(items
        .iter()
        .all(|i| i["parent_execution_id"] == ok.as_str()
            || i["parent_execution_id"] == boom.as_str()));
}
