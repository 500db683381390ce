//! End-to-end throughput through the local runner: steps per second, and DynamoDB reads and
//! writes per step, counted by a proxy between the functions and moto (by `X-Amz-Target`).
//! Polling for completion goes straight to moto, so it is not counted.
//! Run with `scripts/bench throughput` (a plain harness: one run per scenario, printed as a table).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wfe_local::endpoint::{endpoint_url, sdk_config, sdk_config_for};
use wfe_local::runner;

struct Scenario {
    name: &'static str,
    definition: Value,
    input: Value,
    /// Side-effect steps (HTTP calls) the execution performs.
    steps: u64,
}

fn scenarios(peer: &str) -> Vec<Scenario> {
    let mut linear = serde_json::Map::new();
    for i in 0..20 {
        let mut s = json!({"type": "http", "method": "POST", "url": format!("{peer}/echo"), "body": {"i": i}});
        if i < 19 {
            s["next"] = json!(format!("s{}", i + 1));
        }
        linear.insert(format!("s{i}"), s);
    }
    let mut llm = serde_json::Map::new();
    for i in 0..20 {
        let mut s = json!({"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "step {{ execution.id }}", "max_tokens": 16});
        if i < 19 {
            s["next"] = json!(format!("s{}", i + 1));
        }
        llm.insert(format!("s{i}"), s);
    }
    vec![
        Scenario {
            name: "linear, 20 llm steps (priced, tenant budget set)",
            definition: json!({"name": "llm", "start": "s0", "steps": llm}),
            input: json!({}),
            steps: 20,
        },
        Scenario {
            name: "linear, 20 http steps",
            definition: json!({"name": "linear", "start": "s0", "steps": linear}),
            input: json!({}),
            steps: 20,
        },
        Scenario {
            name: "map, 200 items, concurrency 10",
            definition: json!({"name": "map", "start": "each", "steps": {
                "each": {"type": "map", "items": "input.items", "concurrency": 10, "iterator": {"start": "call"}},
                "call": {"type": "http", "method": "POST", "url": format!("{peer}/echo"), "body": {"i": "{{ item }}"}}}}),
            input: json!({"items": (0..200).collect::<Vec<_>>()}),
            steps: 200,
        },
    ]
}

#[tokio::main]
async fn main() {
    let (proxy_url, counts) = wfe_local::proxy::start(endpoint_url()).await;
    let peer = wfe_local::proxy::start_peer().await;

    let sdk = sdk_config_for(&proxy_url).await;
    let direct = sdk_config().await;
    let stack = format!("bench-throughput-{}", std::process::id());
    let template = runner::provision(&direct, &stack).await.unwrap();
    runner::migrate(&direct, &template).await.unwrap();
    let env = runner::bench_env(&peer);
    let base = runner::serve_http(&template, &sdk, &env).await.unwrap();
    let _streams = runner::spawn_streams(&template, &sdk, &env).await.unwrap();
    let _timer = runner::spawn_schedules(&template, &sdk, &env)
        .await
        .unwrap();

    let token = runner::user_token(&template, &direct, &base, "bench", "bench")
        .await
        .unwrap();
    let http = reqwest::Client::new();
    runner::bench_budget(&template, &direct, "bench")
        .await
        .unwrap();
    let repo = shared::engine::Services::new(
        &runner::function_config(&template, "OrchestratorFunction", &env).unwrap(),
        &direct,
    )
    .unwrap()
    .repo;

    println!("| scenario | steps | wall s | steps/s | reads/step | writes/step | stream polls | by operation |");
    println!("|---|---|---|---|---|---|---|---|");
    for s in scenarios(&peer) {
        let wf: Value = http
            .post(format!("{base}/workflows"))
            .bearer_auth(&token)
            .json(&s.definition)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let wf = wf["workflow"]["id"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(500)).await;
        counts.lock().unwrap().clear();
        let started = Instant::now();
        let r: Value = http
            .post(format!("{base}/workflows/{wf}/executions"))
            .bearer_auth(&token)
            .json(&json!({"input": s.input}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["execution_id"].as_str().unwrap();
        let stream = shared::executions::stream_id("bench", id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let state = repo.load(&stream).await.unwrap().state;
            if state.status.is_terminal() {
                assert_eq!(state.status.as_str(), "succeeded", "{:?}", state.error);
                break;
            }
            assert!(Instant::now() < deadline, "{} did not finish", s.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wall = started.elapsed().as_secs_f64();
        // Let the last turns (projections of the final events) land before reading the counts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let c = counts.lock().unwrap().clone();
        let (reads, writes) = wfe_local::proxy::reads_writes(&c);
        let polls = c.get("GetRecords").copied().unwrap_or(0);
        let detail: Vec<String> = c
            .iter()
            .filter(|(k, _)| {
                wfe_local::proxy::READS.contains(&k.as_str())
                    || wfe_local::proxy::WRITES.contains(&k.as_str())
                    || k.as_str() == "GetRecords"
            })
            .map(|(k, v)| {
                format!(
                    "{k} {v} ({} ms)",
                    c.get(&format!("ms:{k}")).copied().unwrap_or(0)
                )
            })
            .collect();
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |",
            s.name,
            s.steps,
            wall,
            s.steps as f64 / wall,
            reads as f64 / s.steps as f64,
            writes as f64 / s.steps as f64,
            polls,
            detail.join(", ")
        );
    }
}
