//! Records that would once stop the shard: durations past the clock's range. Validation refuses
//! them with pointers; a definition stored before those bounds (written straight to the store
//! here) fails only its own execution, with a clear error, while the others run on.

use serde_json::{json, Value};

use crate::support::App;
use crate::workflows::Client;

#[tokio::test]
async fn durations_past_the_clock_are_refused_and_a_stored_one_fails_only_its_execution() {
    let app = App::start_engine("poison", &[]).await;
    let tenant = "t-poison";
    let c = Client::new(&app, tenant).await;
    let bad = json!({"name": "far", "start": "w", "steps": {
        "w": {"type": "wait", "seconds": 10_000_000_000_000u64, "next": "h"},
        "h": {"type": "http", "url": "http://127.0.0.1:9/x", "timeout_seconds": u64::MAX,
              "retry": {"max_attempts": 2, "initial_interval_ms": 100_000_000_000u64}}}});
    let body = c
        .refused(reqwest::Method::POST, "/workflows", Some(bad), 422)
        .await;
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for p in [
        "/steps/w/seconds",
        "/steps/h/timeout_seconds",
        "/steps/h/retry/initial_interval_ms",
    ] {
        assert!(pointers.contains(&p), "{p} in {body:#}");
    }

    // Stored before the bounds existed: only these executions fail.
    let store = shared::workflows::WorkflowStore::new(
        aws_sdk_dynamodb::Client::new(&app.sdk),
        app.template.tables().unwrap().state,
    );
    let poisons = [
        json!({"type": "wait", "seconds": 10_000_000_000_000u64}),
        json!({"type": "wait", "seconds": u64::MAX}),
        json!({"type": "wait", "until": "9999-12-31T00:00:00Z"}),
        json!({"type": "approval", "timeout_seconds": u64::MAX}),
    ];
    let mut poisoned = Vec::new();
    for (n, step) in poisons.iter().enumerate() {
        let id = format!("poison-{n}");
        let def: shared::domain::definition::Definition =
            serde_json::from_value(json!({"name": id, "start": "w", "steps": {"w": step}}))
                .unwrap();
        store.create(tenant, "test", &id, def).await.unwrap();
        poisoned.push(id);
    }
    let fine = c
        .create(json!({"name": "fine", "start": "t", "steps": {
            "t": {"type": "template", "template": "ok {{ input.n }}"}}}))
        .await;
    let mut ids = Vec::new();
    for (n, wf) in poisoned.iter().enumerate() {
        ids.push((true, c.start(wf, json!({})).await));
        ids.push((false, c.start(&fine, json!({"n": n})).await));
    }
    for (poison, id) in &ids {
        let e: Value = c.finished(id).await;
        if *poison {
            assert_eq!(e["status"], "failed", "{e:#}");
            assert_eq!(e["error"]["kind"], "InvalidDuration", "{e:#}");
        } else {
            assert_eq!(e["status"], "succeeded", "{e:#}");
        }
    }
}

#[tokio::test]
async fn a_definition_or_input_too_big_to_store_is_refused_with_the_limit() {
    let app = App::start("sizes", &[]).await;
    let c = Client::new(&app, "t-sizes").await;
    // Under the 1 MiB body limit, over DynamoDB's 400 KB item.
    let big = "x".repeat(600 * 1024);
    let r = c
        .send(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "huge", "start": "t", "steps": {
                "t": {"type": "template", "template": big}}})),
        )
        .await;
    let status = r.status().as_u16();
    assert!(
        status == 413 || status == 422,
        "refused as too large, not {status}"
    );
    let body = crate::support::problem(r, status).await;
    assert!(
        body["detail"].as_str().unwrap().contains("400 KB"),
        "names the limit: {body:#}"
    );
    let listed: Value = c.get_json("/workflows").await;
    assert_eq!(listed["items"], json!([]), "nothing was stored");

    let wf = c
        .create(json!({"name": "small", "start": "t", "steps": {
            "t": {"type": "template", "template": "ok"}}}))
        .await;
    let r = c
        .send(
            reqwest::Method::POST,
            &format!("/workflows/{wf}/executions"),
            Some(json!({"input": {"blob": big}})),
        )
        .await;
    let status = r.status().as_u16();
    assert!(status == 413 || status == 422, "not {status}");
    let body = crate::support::problem(r, status).await;
    assert!(
        body["detail"].as_str().unwrap().contains("400 KB"),
        "names the limit: {body:#}"
    );
}
