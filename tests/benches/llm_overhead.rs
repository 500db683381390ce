//! The engine's own time per `llm` step, with the provider's time taken out: the orchestrator and
//! worker functions are driven by hand (no polling delays), each invocation timed, and every
//! DynamoDB call they make counted by a proxy. The provider is a local OpenAI-compatible double
//! that answers at once; its round trip, measured on its own with the same kind of client, is
//! subtracted from the worker's time. An `http` step to a local echo server is the comparison.
//! Run with `scripts/bench llm_overhead`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event;
use serde_json::{json, Value};
use wfe_local::endpoint::{endpoint_url, sdk_config, sdk_config_for};
use wfe_local::runner;

/// The worker's template `Timeout`: the time a batch has.
const WORKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

const STEPS: usize = 20;

fn linear(step: impl Fn(usize) -> Value) -> Value {
    let mut steps = serde_json::Map::new();
    for i in 0..STEPS {
        let mut s = step(i);
        if i + 1 < STEPS {
            s["next"] = json!(format!("s{}", i + 1));
        }
        steps.insert(format!("s{i}"), s);
    }
    json!({"name": "overhead", "start": "s0", "steps": steps})
}

/// Mean round trip of `request` to the double, over a kept-alive connection.
async fn round_trip(client: &reqwest::Client, url: &str, body: &Value) -> Duration {
    for _ in 0..5 {
        client.post(url).json(body).send().await.unwrap();
    }
    let n = 100;
    let started = Instant::now();
    for _ in 0..n {
        client
            .post(url)
            .bearer_auth("sk-bench")
            .json(body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    started.elapsed() / n
}

#[derive(Default)]
struct Tally {
    time: Duration,
    calls: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, time: Duration, calls: &BTreeMap<String, u64>) {
        self.time += time;
        for (k, v) in calls {
            if !k.starts_with("ms:") {
                *self.calls.entry(k.clone()).or_default() += v;
            }
        }
    }

    fn calls_per_step(&self) -> f64 {
        let (r, w) = wfe_local::proxy::reads_writes(&self.calls);
        (r + w) as f64 / STEPS as f64
    }
}

#[tokio::main]
async fn main() {
    let (proxy_url, counts) = wfe_local::proxy::start(endpoint_url()).await;
    let peer = wfe_local::proxy::start_peer().await;

    let direct = sdk_config().await;
    let counted = sdk_config_for(&proxy_url).await;
    let stack = format!("bench-llm-{}", std::process::id());
    let template = runner::provision(&direct, &stack).await.unwrap();
    runner::migrate(&direct, &template).await.unwrap();
    let env: BTreeMap<String, String> = [
        ("HTTP_ALLOW_PRIVATE_NETWORKS", "true"),
        ("RATE_LIMIT_REQUESTS", "100000"),
        ("OPENAI_API_KEY", "sk-bench"),
        ("OPENAI_BASE_URL", peer.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = |id: &str| runner::function_config(&template, id, &env).unwrap();
    let orchestrator =
        orchestrator::Handler::new(&config("OrchestratorFunction"), &counted).unwrap();
    let worker = worker::Handler::new(&config("WorkerFunction"), &counted)
        .await
        .unwrap();
    let worker_filters = wfe_local::esm::mappings(&template)
        .into_iter()
        .find(|m| m.function == "WorkerFunction")
        .unwrap()
        .filters;
    let tables = template.tables().unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&direct);
    let arn = wfe_local::streams::stream_arn(&dynamodb, &tables.events)
        .await
        .unwrap();
    let mut reader = wfe_local::streams::StreamReader::from_start(
        aws_sdk_dynamodbstreams::Client::new(&direct),
        &arn,
    )
    .await
    .unwrap();
    let services = shared::engine::Services::new(&config("OrchestratorFunction"), &direct).unwrap();
    // A tenant budget, so every llm step reserves and settles as in production.
    runner::bench_budget(&template, &direct, "bench")
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let llm_rtt = round_trip(
        &client,
        &format!("{peer}/v1/chat/completions"),
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}),
    )
    .await;
    let http_rtt = round_trip(&client, &format!("{peer}/echo"), &json!({"i": 1})).await;

    let scenarios = [
        (
            "llm (openai, priced, tenant budget)",
            linear(
                |_| json!({"type": "llm", "provider": "openai", "model": "gpt-4o-mini", "prompt": "step {{ execution.id }}", "max_tokens": 16}),
            ),
            llm_rtt,
        ),
        (
            "http (comparison)",
            linear(
                |i| json!({"type": "http", "method": "POST", "url": format!("{peer}/echo"), "body": {"i": i}}),
            ),
            http_rtt,
        ),
    ];
    println!("| step | steps | worker ms/step | provider round trip ms | worker overhead ms/step | orchestrator ms/step | engine ms/step | worker DynamoDB calls/step | orchestrator calls/step |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (n, (name, definition, rtt)) in scenarios.into_iter().enumerate() {
        let definition: shared::domain::Definition = serde_json::from_value(definition).unwrap();
        let id = format!("overhead-{n}");
        let (_, version) = services
            .workflows
            .create("bench", "bench", &id, definition)
            .await
            .unwrap();
        let execution = uuid::Uuid::new_v4().to_string();
        let stream = shared::executions::stream_id("bench", &execution).unwrap();
        let event = shared::engine::started(&execution, &version, json!({}), None);
        services
            .repo
            .append(
                &stream,
                shared::events::ExpectedVersion::NoStream,
                vec![event],
                &shared::executions::Cause {
                    tenant: "bench",
                    actor: "bench",
                    correlation_id: &execution,
                    causation_id: None,
                    at: chrono::Utc::now(),
                },
                None,
            )
            .await
            .unwrap();

        let (mut orch, mut work) = (Tally::default(), Tally::default());
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let records = reader.poll(1000).await.unwrap();
            if !records.is_empty() {
                let event: Event = serde_json::from_value(json!({"Records": records})).unwrap();
                counts.lock().unwrap().clear();
                let started = Instant::now();
                let r = orchestrator.handle(event).await;
                orch.add(started.elapsed(), &counts.lock().unwrap());
                assert!(r.batch_item_failures.is_empty());
                let tasks: Vec<Value> = records
                    .iter()
                    .filter(|r| worker_filters.iter().any(|f| wfe_local::esm::matches(f, r)))
                    .cloned()
                    .collect();
                if !tasks.is_empty() {
                    let event: Event = serde_json::from_value(json!({"Records": tasks})).unwrap();
                    counts.lock().unwrap().clear();
                    let started = Instant::now();
                    worker.handle(event, WORKER_TIMEOUT).await;
                    work.add(started.elapsed(), &counts.lock().unwrap());
                }
            }
            let state = services.repo.load(&stream).await.unwrap().state;
            if state.status.is_terminal() {
                assert_eq!(state.status.as_str(), "succeeded", "{:?}", state.error);
                if records.is_empty() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{name} did not finish");
        }
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / STEPS as f64;
        let worker_ms = per(work.time);
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        let overhead = worker_ms - rtt_ms;
        println!(
            "| {name} | {STEPS} | {worker_ms:.1} | {rtt_ms:.2} | {overhead:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            per(orch.time),
            overhead + per(orch.time),
            work.calls_per_step(),
            orch.calls_per_step(),
        );
        eprintln!(
            "{name}: worker calls {:?}; orchestrator calls {:?}",
            work.calls, orch.calls
        );
    }
}
