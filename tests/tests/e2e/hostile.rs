//! The hostile-input suite (issue 11): what one tenant can send to hurt the functions everyone
//! shares. Each case gets a clear 4xx or a clearly failed step, and another tenant's executions
//! finish while the hostile ones run.

use serde_json::{json, Value};

use crate::support::App;
use crate::workflows::Client;

fn pointers(body: &Value) -> Vec<(String, String)> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["pointer"].as_str().unwrap().to_owned(),
                e["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn templates_are_checked_before_saving_and_bounded_when_they_run() {
    let app = App::start_engine("hostile-templates", &[]).await;
    let evil = Client::new(&app, "t-hostile-evil").await;
    let good = Client::new(&app, "t-hostile-good").await;

    // Refused before anything runs: every problem at once, unknown step types included.
    let body = evil
        .refused(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "bad", "start": "a", "steps": {
                "a": {"type": "template", "template": "{{ input.x | shout }}", "next": "b"},
                "b": {"type": "template", "template": "{% set s = input.x ~ input.x %}{{ s }}", "next": "c"},
                "c": {"type": "teleport"},
                "d": {"type": "http", "url": 3}}})),
            422,
        )
        .await;
    let found = pointers(&body);
    assert!(
        found.iter().any(|(p, _)| p == "/steps/c")
            && found.iter().any(|(p, _)| p.starts_with("/steps/d")),
        "parse problems of two steps at once: {body:#}"
    );
    let body = evil
        .refused(
            reqwest::Method::POST,
            "/workflows",
            Some(json!({"name": "bad", "start": "a", "steps": {
                "a": {"type": "template", "template": "{{ input.x | shout }}", "next": "b"},
                "b": {"type": "template", "template": "{% set s = input.x ~ input.x %}{{ s }}"}}})),
            422,
        )
        .await;
    let found = pointers(&body);
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/a/template" && m.starts_with("unknown filter `shout`")),
        "{body:#}"
    );
    assert!(
        found
            .iter()
            .any(|(p, m)| p == "/steps/b/template" && m.contains("{% set %}")),
        "{body:#}"
    );

    // Valid, but the input makes it explode: the step fails at once with a clear error.
    let bomb = evil
        .create(json!({"name": "bomb", "start": "t", "steps": {
            "t": {"type": "template", "template": "{% for i in range(input.n) %}{% for j in range(input.n) %}{{ input.s }}{% endfor %}{% endfor %}"}}}))
        .await;
    let fine = good
        .create(json!({"name": "fine", "start": "t", "steps": {
            "t": {"type": "template", "template": "ok {{ input.n }}"}}}))
        .await;
    let bombs: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                evil.start(&bomb, json!({"n": 100000, "s": "x".repeat(64 * 1024)}))
                    .await,
            );
        }
        ids
    };
    let fines: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(good.start(&fine, json!({"n": n})).await);
        }
        ids
    };
    for id in &fines {
        let e = good.finished(id).await;
        assert_eq!(e["status"], "succeeded", "{e:#}");
    }
    for id in &bombs {
        let e = evil.finished(id).await;
        assert_eq!(e["status"], "failed", "{e:#}");
        assert_eq!(e["error"]["kind"], "TemplateError", "{e:#}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("larger than 350 KB") || message.contains("out of fuel"),
            "{message}"
        );
    }
}
