//! The GraphQL subgraph in process: DynamoDB calls per typical query (counted by a proxy between
//! the function and moto, by `X-Amz-Target`), showing that a listing's nested fields are read in
//! batches, and the subgraph's own time per query (criterion; and DynamoDB's share measured by
//! the proxy, so what is left is the subgraph's). Run with `scripts/bench graphql`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use criterion::Criterion;
use serde_json::{json, Value};
use tower::ServiceExt;
use wfe_local::endpoint::{endpoint_url, sdk_config, sdk_config_for};
use wfe_local::runner;

const WORKFLOWS: usize = 20;
const EXECUTIONS_PER_WORKFLOW: usize = 3;

async fn call(app: &axum::Router, token: &str, query: &str, variables: Value) -> Value {
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            serde_json::to_vec(&json!({"query": query, "variables": variables})).unwrap(),
        ))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(body["errors"].is_null(), "{query}: {body}");
    body
}

fn snapshot(counts: &wfe_local::proxy::Counts) -> BTreeMap<String, u64> {
    counts.lock().unwrap().clone()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn main() {
    // One metric line per request would drown the table.
    std::env::set_var("METRICS", "off");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, token, counts, execution) = rt.block_on(async {
        let (proxy_url, counts) = wfe_local::proxy::start(endpoint_url()).await;
        let direct = sdk_config().await;
        let counted = sdk_config_for(&proxy_url).await;
        let stack = format!("bench-gql-{}", std::process::id());
        let template = runner::provision(&direct, &stack).await.unwrap();
        runner::migrate(&direct, &template).await.unwrap();
        // The rate limiter stays on, as deployed: one UpdateItem per request, whatever the query.
        let env: BTreeMap<String, String> = [("RATE_LIMIT_REQUESTS", "1000000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let app = runner::http_app(&template, &counted, &env).await.unwrap();
        let tables = template.tables().unwrap();
        let store =
            shared::auth::AuthStore::new(aws_sdk_dynamodb::Client::new(&direct), tables.state);
        auth::create(
            &store,
            "bencher",
            "bench-password-1",
            "t-bench",
            vec!["admin".into()],
        )
        .await
        .unwrap();
        let login = Request::post("/auth/login")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"tenant": "t-bench", "username": "bencher", "password": "bench-password-1"})
                    .to_string(),
            ))
            .unwrap();
        let r = app.clone().oneshot(login).await.unwrap();
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap())
                .unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        let mut execution = String::new();
        for w in 0..WORKFLOWS {
            let created = call(
                &app,
                &token,
                "mutation($d: JSON!) { createWorkflow(definition: $d) { id } }",
                json!({"d": {"name": format!("bench-{w}"), "start": "ask", "steps": {
                    "ask": {"type": "approval", "timeout_seconds": 3600, "next": "end"},
                    "end": {"type": "succeed"}}}}),
            )
            .await;
            let id = created["data"]["createWorkflow"]["id"]
                .as_str()
                .unwrap()
                .to_owned();
            for _ in 0..EXECUTIONS_PER_WORKFLOW {
                let started = call(
                    &app,
                    &token,
                    "mutation($w: ID!) { startExecution(workflowId: $w) { executionId } }",
                    json!({"w": id}),
                )
                .await;
                execution = started["data"]["startExecution"]["executionId"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
        }
        (app, token, counts, execution)
    });

    let queries: Vec<(&str, String, Value)> = vec![
        (
            "workflows (20, flat)",
            "{ workflows(first: 20) { nodes { id name status latestVersion } } }".into(),
            json!({}),
        ),
        (
            "executions (50) with each one's workflow",
            "{ executions(first: 50) { nodes { id status startedAt workflow { id name } } } }"
                .into(),
            json!({}),
        ),
        (
            "executions (20) with each one's steps",
            "{ executions(first: 20) { nodes { id steps { key status } } } }".into(),
            json!({}),
        ),
        (
            "one execution: steps, inputs, cost, events",
            "query($id: ID!) { execution(id: $id) { status steps { key status durationMs input costUsd } events(first: 50) { nodes { type at } } } }".into(),
            json!({"id": execution}),
        ),
    ];

    // DynamoDB calls and time per query, by operation (one warm-up, then the mean of 20).
    println!("\n| query | DynamoDB calls per query (by operation) | total ms | DynamoDB ms | subgraph's own ms |");
    println!("|---|---|---|---|---|");
    for (name, query, vars) in &queries {
        rt.block_on(call(&app, &token, query, vars.clone()));
        let n = 20u64;
        let before = snapshot(&counts);
        let started = Instant::now();
        for _ in 0..n {
            rt.block_on(call(&app, &token, query, vars.clone()));
        }
        let total = started.elapsed() / n as u32;
        let d = delta(&before, &snapshot(&counts));
        let dynamo_ms: u64 = d
            .iter()
            .filter(|(k, _)| k.starts_with("ms:"))
            .map(|(_, v)| v)
            .sum();
        let ops: Vec<String> = d
            .iter()
            .filter(|(k, _)| !k.starts_with("ms:"))
            .map(|(k, v)| format!("{k} {:.1}", *v as f64 / n as f64))
            .collect();
        let dynamo = Duration::from_millis(dynamo_ms) / n as u32;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            ops.join(", "),
            total.as_secs_f64() * 1e3,
            dynamo.as_secs_f64() * 1e3,
            total.saturating_sub(dynamo).as_secs_f64() * 1e3
        );
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    let mut group = c.benchmark_group("graphql");
    for (name, query, vars) in &queries {
        group.bench_function(*name, |b| {
            b.to_async(&rt)
                .iter(|| call(&app, &token, query, vars.clone()))
        });
    }
    group.finish();
    c.final_summary();
}
