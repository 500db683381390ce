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
        self.failing.lock().unwrap().insert(name.to_owned(), failing);
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn echo(State(p): State<Peer>, Path(name): Path<String>, body: axum::body::Bytes) -> axum::Json<Value> {
    p.count(&name);
    let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    p.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Long enough that concurrent calls overlap.
    tokio::time::sleep(Duration::from_millis(30)).await;
    p.in_flight.fetch_sub(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    axum::Json(json!({"name": name, "got": body}))
}

async fn flaky(State(p): State<Peer>, Path((name, failures)): Path<(String, usize)>) -> (StatusCode, String) {
    let n = p.count(&name);
    if n <= failures {
        (StatusCode::SERVICE_UNAVAILABLE, format!("failure {n}"))
    } else {
        (StatusCode::OK, format!("ok after {n}"))
    }
}

async fn switch(State(p): State<Peer>, Path(name): Path<String>) -> (StatusCode, String) {
    p.count(&name);
    if p.failing.lock().unwrap().get(&name).copied().unwrap_or(false) {
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
    pub async fn new(app: &'a App, tenant: &str) -> Client<'a> {
        let (name, password) = app.user(tenant, &[]).await;
        let (token, _) = app.tokens(&name, &password).await;
        Client { app, token }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut r = self.app.http.request(method, self.app.url(path)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    pub async fn create(&self, def: Value) -> String {
        let r = self.send(reqwest::Method::POST, "/workflows", Some(def)).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["workflow"]["id"].as_str().unwrap().to_owned()
    }

    pub async fn start(&self, workflow: &str, input: Value) -> String {
        let r = self.send(reqwest::Method::POST, &format!("/workflows/{workflow}/executions"), Some(json!({"input": input}))).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["execution_id"].as_str().unwrap().to_owned()
    }

    pub async fn execution(&self, id: &str) -> Value {
        let r = self.send(reqwest::Method::GET, &format!("/executions/{id}"), None).await;
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
            assert!(Instant::now() < deadline, "execution {id} never got {what}: {e:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn finished(&self, id: &str) -> Value {
        self.until(id, "a final status", |e| e["status"] != "running").await
    }

    pub async fn history(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let r = self.send(reqwest::Method::GET, &format!("/executions/{id}/events?from={from}&limit=500"), None).await;
            let page: Value = r.json().await.unwrap();
            out.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["next"].as_u64() {
                Some(n) => from = n,
                None => return out,
            }
        }
    }

    pub async fn types(&self, id: &str) -> Vec<String> {
        self.history(id).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
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
    assert_eq!(e["output"], json!({"result": {"echoed": "Hello RUST", "status": 200}, "topic": "rust"}));
    assert_eq!(peer.calls("linear"), 1);
    assert!(e["duration_ms"].as_i64().is_some());
    // The listing projection catches up with the same summary.
    let r = c.send(reqwest::Method::GET, &format!("/executions?workflow_id={wf}&status=succeeded"), None).await;
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"][0]["execution_id"], id.as_str(), "{page:#}");
    let w: Value = c.send(reqwest::Method::GET, &format!("/workflows/{wf}"), None).await.json().await.unwrap();
    assert_eq!(w["stats"]["runs"], 1, "{w:#}");
    assert_eq!(w["stats"]["success_rate"], 1.0);
}
