//! What a client and a downstream service see when things are retried: an `http` step's
//! `Idempotency-Key` names the step instance, a replayed start answers with the execution as it
//! is, and commands land on an execution whose stream is busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::support::{App, ForcedConflicts};
use crate::workflows::Client;

/// Records each call's `Idempotency-Key` per path; the first call of every path answers 503.
#[derive(Clone, Default)]
struct Keyed {
    keys: Arc<Mutex<HashMap<String, Vec<Option<String>>>>>,
    base: String,
}

async fn keyed(
    State(k): State<Keyed>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut keys = k.keys.lock().unwrap();
    let seen = keys.entry(name.clone()).or_default();
    seen.push(key);
    if seen.len() == 1 {
        (StatusCode::SERVICE_UNAVAILABLE, "try again".into())
    } else {
        (StatusCode::OK, format!("ok {name}"))
    }
}

impl Keyed {
    async fn start() -> Self {
        let mut k = Keyed::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        k.base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/keyed/{name}", axum::routing::get(keyed))
            .with_state(k.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        k
    }

    fn keys(&self, name: &str) -> Vec<Option<String>> {
        self.keys
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn http_steps_send_one_idempotency_key_per_step_instance_across_retries() {
    let peer = Keyed::start().await;
    let app = App::start_engine("idem-key", &[]).await;
    let c = Client::new(&app, "t-idem-key").await;
    let retry = json!({"max_attempts": 3, "initial_interval_ms": 100});
    let wf = c
        .create(json!({"name": "keyed", "start": "one", "steps": {
            "one": {"type": "http", "url": format!("{}/keyed/one", peer.base), "retry": retry, "next": "each"},
            "each": {"type": "map", "items": "input.xs", "iterator": {"start": "call"}, "next": "own"},
            "call": {"type": "http", "url": format!("{}/keyed/item-{{{{ item }}}}", peer.base), "retry": retry},
            "own": {"type": "http", "url": format!("{}/keyed/own", peer.base), "retry": retry,
                    "headers": {"idempotency-key": "mine-{{ execution.id }}"}}}}))
        .await;
    let id = c.start(&wf, json!({"xs": [1, 2]})).await;
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
    let one = peer.keys("one");
    assert_eq!(one.len(), 2, "failed once, then retried");
    assert!(one[0].as_deref().is_some_and(|k| !k.is_empty()));
    assert_eq!(one[0], one[1], "the same key on the retry");
    let (a, b) = (peer.keys("item-1"), peer.keys("item-2"));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert_eq!(a[0], a[1]);
    assert_eq!(b[0], b[1]);
    assert_ne!(a[0], b[0], "each map item is its own instance");
    assert_ne!(a[0], one[0]);
    let own = peer.keys("own");
    assert_eq!(
        own[0].as_deref(),
        Some(format!("mine-{id}").as_str()),
        "the step's own header wins"
    );
}

#[tokio::test]
async fn a_start_replayed_with_its_key_answers_with_the_execution_as_it_is() {
    let app = App::start_engine("replay-start", &[]).await;
    let c = Client::new(&app, "t-replay-start").await;
    let wf = c
        .create(json!({"name": "once", "start": "t", "steps": {
            "t": {"type": "template", "template": "v1 {{ input.n }}"}}}))
        .await;
    let start = |input: Value| {
        let c = &c;
        let path = format!("/workflows/{wf}/executions");
        async move {
            c.app
                .http
                .post(c.app.url(&path))
                .bearer_auth(&c.token)
                .header("Idempotency-Key", "order-7")
                .json(&json!({"input": input}))
                .send()
                .await
                .unwrap()
        }
    };
    let first = start(json!({"n": 1})).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let id = first["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(c.finished(&id).await["status"], "succeeded");

    // A new version, then the workflow archived: the replay still names the same execution.
    let r = c
        .app
        .http
        .put(c.app.url(&format!("/workflows/{wf}")))
        .bearer_auth(&c.token)
        .header("If-Match", "1")
        .json(&json!({"name": "once", "start": "t", "steps": {
            "t": {"type": "template", "template": "v2"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .send(reqwest::Method::DELETE, &format!("/workflows/{wf}"), None)
        .await;
    assert!(r.status().is_success(), "archived: {}", r.status());
    let again = start(json!({"n": 1})).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["execution_id"], id.as_str());
    assert_eq!(again["status"], "succeeded", "{again:#}");
    assert_eq!(again["workflow_version"], 1);
    assert_eq!(again["replayed"], true);

    let other = start(json!({"n": 2})).await;
    let body = crate::support::problem(other, 422).await;
    assert!(body["detail"].as_str().unwrap().contains("Idempotency-Key"));
}

#[tokio::test]
async fn an_approval_lands_on_an_execution_whose_stream_keeps_conflicting() {
    let app = App::start_engine("busy-approval", &[]).await;
    let c = Client::new(&app, "t-busy-approval").await;
    let wf = c
        .create(json!({"name": "ok", "start": "ask", "steps": {
            "ask": {"type": "approval", "next": "done"},
            "done": {"type": "succeed", "output": "approved"}}}))
        .await;
    let id = c.start(&wf, json!({})).await;
    c.until(&id, "awaiting approval", |e| {
        e["awaiting_approval"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    // Twenty appends in a row are refused with a transaction conflict, as when workers and the
    // orchestrator write the same stream at once.
    let rule = ForcedConflicts::add(json!({
        "table": app.template.tables().unwrap().events,
        "key_contains": id,
        "count": 20,
        "single_writes": true,
    }))
    .await;
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/executions/{id}/approvals/ask"),
            Some(json!({"decision": "approve"})),
        )
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    let counters = rule.remove().await;
    assert_eq!(status, 202, "{body:#} after {counters}");
    assert_eq!(counters["forced"], 20);
    let e = c.finished(&id).await;
    assert_eq!(e["status"], "succeeded", "{e:#}");
}
